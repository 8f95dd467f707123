//! meterbridge: read utility meters over wired and wireless M-Bus, decode them and publish
//! the readings.
//!
//! Modules follow the path a telegram takes: bytes arrive (later: `transport`, `receivers`),
//! [`wire`] turns them into validated structures without any I/O, [`telegram`] is the one parse
//! that the rest of the program works on, and [`output`] renders it for people and scripts.

// Nothing here needs it, so the fuzzers can run without AddressSanitizer (docs/fuzzing.md).
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod drivers;
pub mod logging;
pub mod master;
pub mod mqtt;
pub mod output;
pub mod receivers;
pub mod security;
pub mod sim;
pub mod telegram;
pub mod transport;
pub mod web;
pub mod wire;
