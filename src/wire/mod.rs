//! Bytes to structures and back, one protocol layer per file. Nothing here does I/O, allocates
//! per record, or panics on any input: every parser returns a typed error with the byte offset.

pub mod afl;
pub mod application;
pub mod crc;
pub mod datetime;
pub mod ell;
pub mod hex;
pub mod manufacturer;
pub mod medium;
pub mod records;
pub mod tpl;
pub mod vif;
pub mod wired;
pub mod wireless;
