//! Renderings of a decoded telegram: our JSON, and libmbus-compatible XML.

pub mod json;
pub mod libmbus_xml;
mod shapes;
mod text;
pub mod wmbusmeters;
