//! Wired M-Bus timing from EN 13757-2 / EN 60870-5-1: 11 bit times per byte (8E1), a slave
//! answers within 330 bit times + 50 ms, and frames are separated by at least 11 bit times of
//! idle line. Converters add latency, which the user can allow for.

use std::time::Duration;

/// Baud rates M-Bus defines, slowest first.
pub const BAUD_RATES: [u32; 8] = [300, 600, 1200, 2400, 4800, 9600, 19200, 38400];

/// Time one byte takes on the line (start, 8 data, parity, stop).
pub fn byte_time(baud: u32) -> Duration {
    Duration::from_secs_f64(11.0 / f64::from(baud.max(1)))
}

/// Time `n` bytes take on the line.
pub fn wire_time(baud: u32, n: usize) -> Duration {
    byte_time(baud) * n as u32
}

/// The longest a slave may wait before its first byte: 330 bit times plus 50 ms.
pub fn response_window(baud: u32) -> Duration {
    Duration::from_secs_f64(330.0 / f64::from(baud.max(1))) + Duration::from_millis(50)
}

/// Idle line the master keeps between frames: 11 bit times.
pub fn idle_gap(baud: u32) -> Duration {
    byte_time(baud)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_at_2400_baud() {
        // wired.md §5: 4.583 ms per byte, 187.5 ms response window.
        assert_eq!(byte_time(2400).as_micros(), 4583);
        assert_eq!(response_window(2400).as_micros(), 187_500);
        assert_eq!(wire_time(2400, 100).as_millis(), 458);
    }
}
