//! The kernel side as userspace sees it: loading, attaching and pinning the programs
//! (loader), typed access to their maps (maps), and kernel facts (btf).
pub mod btf;
pub mod loader;
pub mod maps;
pub mod sys;
