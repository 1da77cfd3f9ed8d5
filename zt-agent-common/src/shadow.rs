//! Shadow workloads: where unenrolled tasks connect and send.

/// Key of the table of unenrolled tasks' egress: who went where.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShadowKey {
    pub tgid: u32,
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// IP protocol number.
    pub protocol: u8,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ShadowKey>() == 24);
// SAFETY: repr(C), u32 + u16 + two u8 + 16 bytes, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ShadowKey {}

/// Value of the shadow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowValue {
    pub first_ktime_ns: u64,
    pub count: u64,
    pub uid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ShadowValue>() == 40);
// SAFETY: repr(C), two u64, u32 + explicit u32 padding, 16 bytes: no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ShadowValue {}
