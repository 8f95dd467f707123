//! The gateway daemon: wired buses and wireless receivers feed one decoder; readings go through
//! the state cache to MQTT (with Home Assistant discovery) or to standard output.

pub mod bridge;
pub mod bus;
pub mod gateway;
pub mod state;
