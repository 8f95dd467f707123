//! Byte transports to a wired M-Bus segment: serial level converters and M-Bus/TCP gateways.
//! They move bytes and know the line's timing; framing is `wire::wired`, request logic is
//! `master`.

pub mod open;
pub mod port;
pub mod timing;

pub use port::{Port, PortConfig, Reply, Stream};
