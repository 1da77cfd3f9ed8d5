//! Identity by binary and user: files as the kernel sees them, the exec side of a
//! policy as map entries, and the adoption of tasks that were running first (and of the
//! sockets tasks had before they were enrolled).
pub mod adopt;
pub mod files;
pub mod resolve;
pub mod sockets;
