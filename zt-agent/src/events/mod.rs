//! Events: kernel records from the ring buffer, decoded and enriched into JSON lines.
pub mod decode;
pub mod sink;
