//! The per-family policy tries: keys (identity, then address) and values (the
//! allowed port ranges, with the identity's flags).

/// Port ranges one prefix of one identity can carry.
pub const MAX_PORT_RANGES: usize = 16;

/// LPM trie key data for IPv4: identity (big endian) then the address.
/// Prefix length = 32 + the CIDR's prefix length.
pub type KeyV4 = [u8; 8];
/// LPM trie key data for IPv6: identity (big endian) then the address.
pub type KeyV6 = [u8; 20];
/// Bits of the key taken by the identity.
pub const IDENTITY_KEY_BITS: u32 = 32;

#[must_use]
pub fn key_v4(identity: u32, addr: [u8; 4]) -> KeyV4 {
    let id = identity.to_be_bytes();
    [
        id[0], id[1], id[2], id[3], addr[0], addr[1], addr[2], addr[3],
    ]
}

#[must_use]
pub fn key_v6(identity: u32, addr: [u8; 16]) -> KeyV6 {
    let mut k = [0u8; 20];
    let id = identity.to_be_bytes();
    let mut i = 0;
    while i < 4 {
        k[i] = id[i];
        i += 1;
    }
    while i < 20 {
        k[i] = addr[i - 4];
        i += 1;
    }
    k
}

/// Protocol bits of a port range.
pub const PROTO_MASK_TCP: u8 = 1;
pub const PROTO_MASK_UDP: u8 = 2;

/// One allowed port range, inclusive, for the protocols in `proto_mask`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
    pub proto_mask: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<PortRange>() == 8);
// SAFETY: repr(C), two u16, u8 + 3 explicit padding bytes, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PortRange {}

/// Value of the policy tries. Every identity in the policy has a root entry (prefix
/// length 32: the identity bits only) in both tries, so a lookup for an identity in
/// the policy always finds a value; no value means the identity is not in the policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyValue {
    /// `IDENTITY_FLAG_*` of the identity.
    pub flags: u32,
    pub n_ranges: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8 + 8 * MAX_PORT_RANGES);
// SAFETY: repr(C), two u32 then PortRange records, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyValue {}

impl PolicyValue {
    #[must_use]
    pub const fn empty(flags: u32) -> Self {
        Self {
            flags,
            n_ranges: 0,
            ranges: [PortRange {
                lo: 0,
                hi: 0,
                proto_mask: 0,
                _pad: [0; 3],
            }; MAX_PORT_RANGES],
        }
    }

    /// Whether `port` over the protocol bit `proto_mask` is allowed.
    #[inline(always)]
    #[must_use]
    pub fn allows(&self, port: u16, proto_mask: u8) -> bool {
        let mut i = 0;
        while i < MAX_PORT_RANGES {
            if i as u32 >= self.n_ranges {
                return false;
            }
            let r = &self.ranges[i];
            if r.proto_mask & proto_mask != 0 && r.lo <= port && port <= r.hi {
                return true;
            }
            i += 1;
        }
        false
    }
}
