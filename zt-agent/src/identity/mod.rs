//! Identity by binary and user: files as the kernel sees them, the exec side of a
//! policy as map entries, and the adoption of tasks that were running first.
pub mod adopt;
pub mod files;
pub mod resolve;
