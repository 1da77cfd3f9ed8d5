//! The kernel side as userspace sees it: loading, attaching and pinning the programs
//! (loader), typed access to their maps (maps), kernel facts (btf), and the kernel
//! features the programs need, probed at start-up (features).
pub mod btf;
pub mod features;
pub mod loader;
pub mod maps;
pub mod sys;
