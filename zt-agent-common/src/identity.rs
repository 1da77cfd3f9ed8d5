//! Identity ids and the per-identity settings the programs consult.

/// Largest identity id plus one. Id 0 means "not enrolled".
pub const MAX_IDENTITIES: u32 = 1024;
/// Identity id that is never assigned: an unenrolled task or socket.
pub const IDENTITY_NONE: u32 = 0;
/// Reserved identity of tasks that exec'd a selected file which no longer matches what
/// the policy pinned (digest, or a change since the daemon verified it). It has no
/// egress rules and no exec allowlist entries: deny all.
pub const IDENTITY_QUARANTINE: u32 = MAX_IDENTITIES - 1;

/// Per-identity settings, indexed by identity id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `IDENTITY_FLAG_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<IdentityConfig>() == 4);
// SAFETY: repr(C), one u32, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for IdentityConfig {}

/// Audit mode. Carried in every policy value too, so that one lookup gives both the
/// allowed ports and how to enforce them.
pub const IDENTITY_FLAG_AUDIT: u32 = 1;
/// The identity is in the installed policy (absent: removed, deny all).
pub const IDENTITY_FLAG_IN_POLICY: u32 = 2;
/// Exec is limited to the identity's allowlist.
pub const IDENTITY_FLAG_EXEC_RESTRICTED: u32 = 4;
