//! MQTT output: a publisher with an outage queue ([`client`]) and Home Assistant device-based
//! discovery generated from the driver files ([`discovery`] renders, [`entities`] decides which
//! entities and classes, [`units`], [`manufacturers`]).
//!
//! The daemon drives it; this module reads no configuration file. Topics, payloads and the
//! queue's behaviour are described in `docs/mqtt.md`.

pub mod client;
pub mod discovery;
pub mod entities;
pub mod manufacturers;
pub mod outbox;
mod tls;
pub mod units;

pub use client::{
    start, Incoming, MqttError, MqttSettings, MqttStats, Publisher, DEFAULT_QUEUE_LIMIT,
    ORIGIN_VERSION,
};
pub use discovery::{Component, DeviceDescriptor, Platform};
