//! Numbers and hex appended to a `String` without `fmt` and without UTF-8 checks: the writers
//! print several per record, and both cost more than the digits themselves.

use crate::wire::records::Decimal;

/// "00" to "99". Digits are copied out of it as `&str`, so appending them needs no check that
/// they are UTF-8.
const PAIRS: &str = concat!(
    "00010203040506070809",
    "10111213141516171819",
    "20212223242526272829",
    "30313233343536373839",
    "40414243444546474849",
    "50515253545556575859",
    "60616263646566676869",
    "70717273747576777879",
    "80818283848586878889",
    "90919293949596979899",
);

/// `n` < 100 as two digits.
fn pair(n: u64) -> &'static str {
    let i = n as usize * 2;
    &PAIRS[i..i + 2]
}

/// `n` < 10,000 without leading zeros.
#[inline(always)]
fn push_below_10000(out: &mut String, n: u64) {
    if n < 10 {
        out.push(char::from(b'0' + n as u8));
    } else if n < 100 {
        out.push_str(pair(n));
    } else if n < 1000 {
        out.push(char::from(b'0' + (n / 100) as u8));
        out.push_str(pair(n % 100));
    } else {
        out.push_str(pair(n / 100));
        out.push_str(pair(n % 100));
    }
}

/// Decimal digits of `n`, as `{n}` prints them.
#[inline]
pub(crate) fn push_u64(out: &mut String, n: u64) {
    // Indexes, offsets, storage numbers, tariffs: nearly all below 10,000.
    if n < 10_000 {
        push_below_10000(out, n);
    } else {
        push_large(out, n);
    }
}

fn push_large(out: &mut String, n: u64) {
    // Groups of four digits, least significant first; u64::MAX has 20 digits.
    let mut groups = [0u64; 5];
    let mut count = 0;
    let mut top = n;
    while top >= 10_000 {
        groups[count] = top % 10_000;
        top /= 10_000;
        count += 1;
    }
    push_below_10000(out, top);
    for &g in groups[..count].iter().rev() {
        out.push_str(pair(g / 100));
        out.push_str(pair(g % 100));
    }
}

/// `{n:0width$}`: leading zeros up to `width` digits.
pub(crate) fn push_u64_padded(out: &mut String, n: u64, width: u32) {
    // Months, days, hours, minutes, seconds; years.
    if width == 2 && n < 100 {
        out.push_str(pair(n));
        return;
    }
    if width == 4 && n < 10_000 {
        out.push_str(pair(n / 100));
        out.push_str(pair(n % 100));
        return;
    }
    for _ in digit_count(n)..width {
        out.push('0');
    }
    push_u64(out, n);
}

pub(crate) fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Upper-case hex of `n`, at least `width` digits (`{n:0width$X}`).
pub(crate) fn push_hex_u64(out: &mut String, n: u64, width: usize) {
    const HEX: &str = "0123456789ABCDEF";
    let digits = (64 - n.leading_zeros() as usize)
        .div_ceil(4)
        .max(width)
        .max(1);
    for i in (0..digits).rev() {
        let d = if i < 16 {
            (n >> (i * 4)) as usize & 0xF
        } else {
            0
        };
        out.push_str(&HEX[d..d + 1]);
    }
}

/// `{v:.6}` (C's `%f`) of a finite `v` whose integer part fits 64 bits: the exact binary value
/// rounded half to even at the sixth decimal, in integer arithmetic. `false` (and nothing
/// written) for other values.
pub(crate) fn push_fixed6(out: &mut String, v: f64) -> bool {
    const SCALE: u128 = 1_000_000;
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7FF) as i32;
    let fraction = bits & ((1 << 52) - 1);
    if biased == 0x7FF {
        return false;
    }
    // v = ±mantissa × 2^exp exactly.
    let (mantissa, exp) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | 1 << 52, biased - 1075)
    };
    // The value in millionths, rounded.
    let millionths: u128 = if exp >= 0 {
        // 2^53 × 2^10 × 10^6 still fits; larger values are left to `fmt`.
        if exp > 10 {
            return false;
        }
        u128::from(mantissa << exp) * SCALE
    } else {
        let shift = exp.unsigned_abs();
        let n = u128::from(mantissa) * SCALE;
        if shift >= 128 {
            // Below 2^-75: less than half a millionth.
            0
        } else {
            let q = n >> shift;
            let rest = n & ((1 << shift) - 1);
            let half = 1u128 << (shift - 1);
            if rest > half || (rest == half && q & 1 == 1) {
                q + 1
            } else {
                q
            }
        }
    };
    if v.is_sign_negative() {
        out.push('-');
    }
    push_u64(out, (millionths / SCALE) as u64);
    out.push('.');
    push_u64_padded(out, (millionths % SCALE) as u64, 6);
    true
}

/// 10^0 to 10^19.
const POW10: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Digits of `n` (at least one).
fn digit_count(n: u64) -> u32 {
    let mut count = 1;
    while (count as usize) < POW10.len() && n >= POW10[count as usize] {
        count += 1;
    }
    count
}

/// `n / 10^decimals` and `n % 10^decimals`. The VIF tables' exponents (1 to 9 decimals) get a
/// constant divisor each, which the compiler turns into a multiplication; a division by a
/// variable is several times slower.
fn split_decimals(n: u64, decimals: u32) -> (u64, u64) {
    macro_rules! by {
        ($p:expr) => {
            (n / $p, n % $p)
        };
    }
    match decimals {
        1 => by!(10),
        2 => by!(100),
        3 => by!(1_000),
        4 => by!(10_000),
        5 => by!(100_000),
        6 => by!(1_000_000),
        7 => by!(10_000_000),
        8 => by!(100_000_000),
        9 => by!(1_000_000_000),
        _ => {
            let unit = POW10[decimals as usize % POW10.len()];
            (n / unit, n % unit)
        }
    }
}

/// What [`Decimal::format`] writes, for the values meters send (a 64-bit mantissa, at most 19
/// decimals) in integer arithmetic straight into `out`; anything else through `format`.
pub(crate) fn push_decimal(out: &mut String, d: Decimal) {
    let (Ok(abs), -19..=100) = (u64::try_from(d.mantissa.unsigned_abs()), d.exponent) else {
        let mut buf = [0u8; 256];
        out.push_str(d.format(&mut buf));
        return;
    };
    if d.mantissa < 0 {
        out.push('-');
    }
    if d.exponent >= 0 {
        push_u64(out, abs);
        if abs != 0 {
            for _ in 0..d.exponent {
                out.push('0');
            }
        }
        return;
    }
    let decimals = u32::from(d.exponent.unsigned_abs());
    let (whole, mut fraction) = split_decimals(abs, decimals);
    push_u64(out, whole);
    if fraction == 0 {
        return;
    }
    // Trailing zeros of the fraction carry no information.
    let mut len = decimals;
    while fraction % 10 == 0 {
        fraction /= 10;
        len -= 1;
    }
    out.push('.');
    for _ in digit_count(fraction)..len {
        out.push('0');
    }
    push_u64(out, fraction);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interesting_u64() -> Vec<u64> {
        let mut v = vec![
            0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 9999, 10_000, 10_001,
        ];
        v.extend([65_535, 99_999_999, 100_000_000, u64::MAX, u64::MAX - 1]);
        v.extend((0..64).map(|b| 1u64 << b));
        v.extend((0..64).map(|b| (1u64 << b) - 1));
        v.extend((0..20).map(|e| 10u64.pow(e)));
        v.extend((1..20).map(|e| 10u64.pow(e) - 1));
        v
    }

    #[test]
    fn integers_print_as_rust_prints_them() {
        for n in interesting_u64() {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
            for i in [n as i64, (n as i64).wrapping_neg()] {
                s.clear();
                push_i64(&mut s, i);
                assert_eq!(s, i.to_string());
            }
            for width in [0, 1, 2, 4] {
                s.clear();
                push_u64_padded(&mut s, n, width);
                assert_eq!(s, format!("{n:0width$}", width = width as usize));
            }
        }
        let mut s = String::new();
        push_i64(&mut s, i64::MIN);
        assert_eq!(s, i64::MIN.to_string());
    }

    #[test]
    fn hex_prints_as_rust_prints_it() {
        for n in interesting_u64() {
            for width in [0, 1, 2, 4, 8, 17] {
                let mut s = String::new();
                push_hex_u64(&mut s, n, width);
                assert_eq!(s, format!("{n:0width$X}"), "{n} {width}");
            }
        }
    }

    #[test]
    fn fixed6_prints_as_rust_prints_it() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            561.08,
            0.0078125,
            0.0234375,
            2.5e-6,
            5e-7,
            1.5,
            2.5,
            1e-30,
            -1e-30,
            0.005,
            0.02,
            2.0,
            21.536_703_109_741_21,
            1e15,
            9.0e15,
            9.3e18,
            1e-320,
            0.1,
            0.7,
        ];
        // Ties at the sixth decimal (odd multiples of 2^-7 and 2^-8) and their neighbours.
        for k in 0..300u32 {
            let tie = f64::from(2 * k + 1) / 128.0;
            values.extend([
                tie,
                f64::from(2 * k + 1) / 256.0,
                tie.next_up(),
                tie.next_down(),
            ]);
        }
        // A spread of magnitudes and bit patterns (a fixed linear congruential sequence).
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let v = f64::from_bits(x);
            values.push(v);
            // Meter-sized values: a few digits before and after the point.
            values.push((x >> 11) as f64 / 1e6 / f64::from(1 << (x % 16) as u32));
        }
        for v in values {
            let mut s = String::new();
            if push_fixed6(&mut s, v) {
                assert_eq!(s, format!("{v:.6}"), "{v:e}");
            } else {
                assert!(s.is_empty());
                assert!(!v.is_finite() || v.abs() >= 9.0e15, "{v:e} left to fmt");
            }
        }
    }

    #[test]
    fn decimals_print_as_decimal_format_prints_them() {
        let mut mantissas: Vec<i128> = interesting_u64().into_iter().map(i128::from).collect();
        mantissas.extend(mantissas.clone().iter().map(|m| -m));
        mantissas.extend([
            i128::MAX,
            i128::MIN,
            1 << 64,
            -(1 << 64),
            5,
            50,
            1005,
            56_108,
        ]);
        for &m in &mantissas {
            for e in [
                -120, -101, -100, -21, -20, -19, -18, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1, 0,
                1, 3, 100, 101,
            ] {
                let d = Decimal::new(m, e);
                let mut s = String::new();
                push_decimal(&mut s, d);
                let mut buf = [0u8; 256];
                assert_eq!(s, d.format(&mut buf), "{m} e{e}");
            }
        }
    }
}
