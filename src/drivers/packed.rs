//! Built-in drivers in packed form: build.rs parses every `drivers/*.yaml` file and writes its
//! contents in the byte format below; a driver's first use reads its bytes back into the
//! `model` types. This file is compiled into build.rs too (`#[path]`), so writing and reading
//! are defined once, side by side.
//!
//! Why bytes rather than Rust constants: a process maps the data of the drivers it builds, a
//! fault-around window at a time. As constants, a field was 450 bytes (an `Option` of offsets
//! for each attribute, most of them `None`), and the 60 drivers of a 100-meter daemon had
//! entries spread over the whole 700 KB table, so all of it was resident. Packed, a field is
//! about 40 bytes and one driver's bytes are together; the test cases, which decoding never
//! reads, are after every driver's fields. And bytes need no relocation when the program loads.
//!
//! The format:
//! - unsigned integers: LEB128 (seven bits per byte, lowest first, high bit = more);
//! - `i32`: zigzag, then LEB128; `f64`: its eight bytes, little-endian; `bool`: one byte;
//! - a text: its length, then its UTF-8 bytes;
//! - `Option`: 0, or 1 and the value; a list or map: the count, then the elements;
//! - an enum: a tag byte, then the variant's contents;
//! - a record: its fields in the order of the `record!` list, which destructures the model's
//!   type on one side and builds it on the other, so a field added to the model and not here
//!   does not build.

use std::collections::BTreeMap;

use super::model::{self, serde_json_value::Value, NumberRange, Quantity};

/// The packed bytes do not read back as a driver: the build wrote them with another format
/// (a bug; the tests read back every built-in driver), or they are cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damaged {
    /// Offset in the driver's bytes where reading failed.
    pub at: usize,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "built-in driver data does not read back at byte {} (the binary was built \
             with a packed-driver format it does not read)",
            self.at
        )
    }
}

impl std::error::Error for Damaged {}

/// Reads values one after another from packed bytes; never panics, whatever the bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn damaged(&self) -> Damaged {
        Damaged { at: self.at }
    }

    fn byte(&mut self) -> Result<u8, Damaged> {
        let b = *self.bytes.get(self.at).ok_or(self.damaged())?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self.at.checked_add(n).ok_or(self.damaged())?;
        let slice = self.bytes.get(self.at..end).ok_or(self.damaged())?;
        self.at = end;
        Ok(slice)
    }

    fn uint(&mut self) -> Result<u64, Damaged> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may carry one bit only.
            if shift == 63 && bits > 1 {
                return Err(self.damaged());
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.damaged())
    }

    /// A count of elements that follow: at most one per remaining byte (every element takes at
    /// least one), so damaged bytes cannot make a reader reserve a huge list.
    fn count(&mut self) -> Result<usize, Damaged> {
        let n = self.uint()?;
        let left = self.bytes.len() - self.at;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= left)
            .ok_or(self.damaged())
    }

    /// Reads one value and checks that it used every byte.
    pub fn whole<T: Packed>(bytes: &'a [u8]) -> Result<T, Damaged> {
        let mut r = Reader::new(bytes);
        let value = T::unpack(&mut r)?;
        if r.at != bytes.len() {
            return Err(r.damaged());
        }
        Ok(value)
    }
}

// Writing is build.rs's side (and the tests'); the program only reads.
#[cfg_attr(not(test), allow(dead_code))]
fn put_uint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// A value with a packed form.
pub trait Packed: Sized {
    #[cfg_attr(not(test), allow(dead_code))]
    fn pack(&self, out: &mut Vec<u8>);
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged>;
}

impl Packed for bool {
    fn pack(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        match r.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Damaged { at: r.at - 1 }),
        }
    }
}

/// Security modes (`plain_security_modes`) are bytes.
impl Packed for u8 {
    fn pack(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        r.byte()
    }
}

impl Packed for u64 {
    fn pack(&self, out: &mut Vec<u8>) {
        put_uint(out, *self);
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        r.uint()
    }
}

impl Packed for usize {
    fn pack(&self, out: &mut Vec<u8>) {
        put_uint(out, *self as u64);
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        let at = r.at;
        usize::try_from(r.uint()?).map_err(|_| Damaged { at })
    }
}

impl Packed for i32 {
    fn pack(&self, out: &mut Vec<u8>) {
        // Zigzag: small negative numbers stay short.
        put_uint(out, u64::from(((*self << 1) ^ (*self >> 31)) as u32));
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        let at = r.at;
        let z = u32::try_from(r.uint()?).map_err(|_| Damaged { at })?;
        Ok(((z >> 1) as i32) ^ -((z & 1) as i32))
    }
}

impl Packed for f64 {
    fn pack(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        let mut b = [0u8; 8];
        b.copy_from_slice(r.take(8)?);
        Ok(f64::from_le_bytes(b))
    }
}

impl Packed for String {
    fn pack(&self, out: &mut Vec<u8>) {
        put_uint(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        let at = r.at;
        let n = r.count()?;
        let bytes = r.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| Damaged { at })
    }
}

impl<T: Packed> Packed for Option<T> {
    fn pack(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.pack(out);
            }
        }
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        match r.byte()? {
            0 => Ok(None),
            1 => Ok(Some(T::unpack(r)?)),
            _ => Err(Damaged { at: r.at - 1 }),
        }
    }
}

impl<T: Packed> Packed for Box<T> {
    fn pack(&self, out: &mut Vec<u8>) {
        (**self).pack(out);
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        T::unpack(r).map(Box::new)
    }
}

impl<T: Packed> Packed for Vec<T> {
    fn pack(&self, out: &mut Vec<u8>) {
        put_uint(out, self.len() as u64);
        for v in self {
            v.pack(out);
        }
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        let n = r.count()?;
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            list.push(T::unpack(r)?);
        }
        Ok(list)
    }
}

impl<K: Packed + Ord, V: Packed> Packed for BTreeMap<K, V> {
    fn pack(&self, out: &mut Vec<u8>) {
        put_uint(out, self.len() as u64);
        for (k, v) in self {
            k.pack(out);
            v.pack(out);
        }
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        let n = r.count()?;
        let mut map = BTreeMap::new();
        for _ in 0..n {
            let k = K::unpack(r)?;
            let v = V::unpack(r)?;
            map.insert(k, v);
        }
        Ok(map)
    }
}

/// The quantities in the order of their tags (`quantity_tag`).
const QUANTITIES: [Quantity; 23] = [
    Quantity::Volume,
    Quantity::Energy,
    Quantity::Power,
    Quantity::Flow,
    Quantity::Temperature,
    Quantity::Pressure,
    Quantity::Hca,
    Quantity::Time,
    Quantity::Voltage,
    Quantity::Current,
    Quantity::Frequency,
    Quantity::RelativeHumidity,
    Quantity::Mass,
    Quantity::ApparentEnergy,
    Quantity::ReactiveEnergy,
    Quantity::ApparentPower,
    Quantity::ReactivePower,
    Quantity::Angle,
    Quantity::Datetime,
    Quantity::Date,
    Quantity::Text,
    Quantity::Counter,
    Quantity::Dimensionless,
];

/// A match, so that a quantity added to the model and not here does not build.
#[cfg_attr(not(test), allow(dead_code))]
fn quantity_tag(q: Quantity) -> u8 {
    match q {
        Quantity::Volume => 0,
        Quantity::Energy => 1,
        Quantity::Power => 2,
        Quantity::Flow => 3,
        Quantity::Temperature => 4,
        Quantity::Pressure => 5,
        Quantity::Hca => 6,
        Quantity::Time => 7,
        Quantity::Voltage => 8,
        Quantity::Current => 9,
        Quantity::Frequency => 10,
        Quantity::RelativeHumidity => 11,
        Quantity::Mass => 12,
        Quantity::ApparentEnergy => 13,
        Quantity::ReactiveEnergy => 14,
        Quantity::ApparentPower => 15,
        Quantity::ReactivePower => 16,
        Quantity::Angle => 17,
        Quantity::Datetime => 18,
        Quantity::Date => 19,
        Quantity::Text => 20,
        Quantity::Counter => 21,
        Quantity::Dimensionless => 22,
    }
}

impl Packed for Quantity {
    fn pack(&self, out: &mut Vec<u8>) {
        out.push(quantity_tag(*self));
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        let tag = r.byte()?;
        QUANTITIES
            .get(usize::from(tag))
            .copied()
            .ok_or(Damaged { at: r.at - 1 })
    }
}

impl Packed for NumberRange {
    fn pack(&self, out: &mut Vec<u8>) {
        match self {
            NumberRange::One(n) => {
                out.push(0);
                n.pack(out);
            }
            NumberRange::Range([lo, hi]) => {
                out.push(1);
                lo.pack(out);
                hi.pack(out);
            }
        }
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        match r.byte()? {
            0 => Ok(NumberRange::One(r.uint()?)),
            1 => Ok(NumberRange::Range([r.uint()?, r.uint()?])),
            _ => Err(Damaged { at: r.at - 1 }),
        }
    }
}

impl Packed for Value {
    fn pack(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Bool(b) => {
                out.push(1);
                b.pack(out);
            }
            Value::Number(n) => {
                out.push(2);
                n.pack(out);
            }
            Value::Text(s) => {
                out.push(3);
                s.pack(out);
            }
        }
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        match r.byte()? {
            0 => Ok(Value::Null),
            1 => Ok(Value::Bool(bool::unpack(r)?)),
            2 => Ok(Value::Number(f64::unpack(r)?)),
            3 => Ok(Value::Text(String::unpack(r)?)),
            _ => Err(Damaged { at: r.at - 1 }),
        }
    }
}

/// A record: its fields one after another, in this order.
macro_rules! record {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl Packed for model::$name {
            fn pack(&self, out: &mut Vec<u8>) {
                let model::$name { $($field),* } = self;
                $( $field.pack(out); )*
            }
            fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
                // Struct expressions evaluate their fields in the order written.
                Ok(model::$name { $($field: Packed::unpack(r)?),* })
            }
        }
    };
}

record!(Field {
    name,
    quantity,
    unit,
    info,
    matcher,
    lookup,
    attributes,
    scale,
    formula,
    from,
    mask,
    text_format,
    width,
    precision,
    unsigned,
    date_shift,
    null_value,
    profile,
    texts,
    ha,
});
record!(DateShift { from, months, when });
record!(Match {
    measurement,
    vif_range,
    storage,
    tariff,
    subunit,
    difvif,
    difvif_or,
    combinable,
    nth,
});
record!(Lookup {
    name,
    kind,
    mask,
    default,
    map,
});
record!(HaMeta {
    device_class,
    state_class,
    entity_category,
    icon,
});
record!(TestCase {
    name,
    id,
    key,
    driver,
    telegrams,
    expected,
    comment,
});

/// A driver without its test cases, which are packed on their own (`Vec<TestCase>`): decoding
/// never reads them, so they are kept apart from what it does read.
impl Packed for model::DriverFile {
    fn pack(&self, out: &mut Vec<u8>) {
        let model::DriverFile {
            name,
            aliases,
            meter_type,
            media,
            info,
            detect,
            link_modes,
            default_fields,
            tpl_status_bits,
            decoder,
            enhanced_identity,
            plain_security_modes,
            scrambled_security_modes,
            scrambling,
            fields,
            tests: _,
        } = self;
        name.pack(out);
        aliases.pack(out);
        meter_type.pack(out);
        media.pack(out);
        info.pack(out);
        detect.pack(out);
        link_modes.pack(out);
        default_fields.pack(out);
        tpl_status_bits.pack(out);
        decoder.pack(out);
        enhanced_identity.pack(out);
        plain_security_modes.pack(out);
        scrambled_security_modes.pack(out);
        scrambling.pack(out);
        fields.pack(out);
    }
    fn unpack(r: &mut Reader<'_>) -> Result<Self, Damaged> {
        Ok(model::DriverFile {
            name: Packed::unpack(r)?,
            aliases: Packed::unpack(r)?,
            meter_type: Packed::unpack(r)?,
            media: Packed::unpack(r)?,
            info: Packed::unpack(r)?,
            detect: Packed::unpack(r)?,
            link_modes: Packed::unpack(r)?,
            default_fields: Packed::unpack(r)?,
            tpl_status_bits: Packed::unpack(r)?,
            decoder: Packed::unpack(r)?,
            enhanced_identity: Packed::unpack(r)?,
            plain_security_modes: Packed::unpack(r)?,
            scrambled_security_modes: Packed::unpack(r)?,
            scrambling: Packed::unpack(r)?,
            fields: Packed::unpack(r)?,
            tests: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Packed + std::fmt::Debug>(v: &T) -> String {
        let mut out = Vec::new();
        v.pack(&mut out);
        match Reader::whole::<T>(&out) {
            Ok(back) => format!("{back:?}"),
            Err(e) => panic!("{v:?} did not read back: {e}"),
        }
    }

    #[test]
    fn integers_read_back_at_every_length() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            v.pack(&mut out);
            assert_eq!(Reader::whole::<u64>(&out), Ok(v), "{v}: {out:02x?}");
        }
        let mut out = Vec::new();
        300u64.pack(&mut out);
        assert_eq!(out, [0xac, 0x02]);
        for v in [0i32, 1, -1, 63, -64, i32::MAX, i32::MIN] {
            assert_eq!(round_trip(&v), v.to_string());
        }
        let mut out = Vec::new();
        (-1i32).pack(&mut out);
        assert_eq!(out, [1], "zigzag keeps -1 in one byte");
    }

    #[test]
    fn a_number_longer_than_64_bits_is_damaged() {
        // Ten bytes whose last carries more than the 64th bit, and eleven bytes.
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(Reader::whole::<u64>(&too_big), Err(Damaged { at: 10 }));
        let too_long = [0x80; 11];
        assert!(Reader::whole::<u64>(&too_long).is_err());
    }

    #[test]
    fn every_quantity_has_its_own_tag() {
        for (i, q) in QUANTITIES.iter().enumerate() {
            assert_eq!(usize::from(quantity_tag(*q)), i, "{q:?}");
            assert_eq!(round_trip(q), format!("{q:?}"));
        }
    }

    #[test]
    fn values_and_ranges_read_back() {
        for v in [
            Value::Null,
            Value::Bool(true),
            Value::Number(-12.5),
            Value::Text("ÄÖ m³".into()),
        ] {
            assert_eq!(round_trip(&v), format!("{v:?}"));
        }
        for n in [NumberRange::One(8), NumberRange::Range([1, 12])] {
            assert_eq!(round_trip(&n), format!("{n:?}"));
        }
    }

    #[test]
    fn a_count_larger_than_the_bytes_left_is_damaged_not_reserved() {
        let mut out = Vec::new();
        put_uint(&mut out, u64::MAX >> 1);
        assert!(Reader::whole::<Vec<String>>(&out).is_err());
        assert!(Reader::whole::<String>(&[3, b'a']).is_err());
        assert!(
            Reader::whole::<String>(&[2, 0xff, 0xfe]).is_err(),
            "not UTF-8"
        );
    }
}
