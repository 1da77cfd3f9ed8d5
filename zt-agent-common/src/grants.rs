//! Time-bound and task-scoped access: grants, the open windows of `when` rules, and
//! the markers of `ask` rules, in one longest-prefix trie per family keyed like the
//! policy tries (identity, then address). Userspace writes each prefix with every
//! allowance of the entries whose network contains it, so one lookup finds them all.
//!
//! The kernel consults these tries only when no policy rule and no learned address
//! allows a destination. Each allowance carries its deadline on the boot clock and
//! its scope, which the kernel compares with the calling task: expiry and task scope
//! hold while the daemon is down.

/// Capacity of each per-family grant trie, all identities together.
pub const GRANT_TRIE_CAPACITY: u32 = 1 << 16;
/// Most trie entries (distinct prefixes) one identity may hold in one family.
pub const GRANT_ENTRIES_PER_IDENTITY: usize = 4096;
/// Allowances one prefix of one identity can carry.
pub const GRANT_SLOTS: usize = 16;

/// LPM trie key data for IPv4: identity (big endian) then the address.
pub type GrantKeyV4 = [u8; 8];
/// LPM trie key data for IPv6: identity (big endian), the address, 4 zero bytes (so
/// that the value, which holds u64 fields, is 8-byte aligned after the key).
pub type GrantKeyV6 = [u8; 24];

#[must_use]
pub fn grant_key_v6(identity: u32, addr: [u8; 16]) -> GrantKeyV6 {
    let mut k = [0u8; 24];
    let base = crate::policy::key_v6(identity, addr);
    let mut i = 0;
    while i < base.len() {
        k[i] = base[i];
        i += 1;
    }
    k
}

/// What an allowance is.
pub const GRANT_KIND_GRANT: u8 = 1;
/// A `when` rule: open until `deadline_ns`, the end of its current window (0 while
/// the window is closed, so that a denial can say why).
pub const GRANT_KIND_WINDOW: u8 = 2;
/// An `ask` rule: never allows, marks the destination as reachable by approval.
pub const GRANT_KIND_ASK: u8 = 3;

/// Scope: every task of the identity.
pub const GRANT_SCOPE_IDENTITY: u8 = 0;
/// Scope: tasks whose cgroup v2 id is `scope_id` (a `zt-agent run` launch cgroup;
/// cgroup ids are never reused, so the allowance dies with the cgroup).
pub const GRANT_SCOPE_CGROUP: u8 = 1;
/// Scope: the thread group `scope_id` that started at `scope_start` (clock ticks
/// since boot, as /proc/PID/stat reports it), so that a later holder of the pid does
/// not inherit it.
pub const GRANT_SCOPE_TGID: u8 = 2;

/// Nanoseconds per clock tick of /proc/PID/stat's start time (USER_HZ is 100).
pub const NS_PER_CLOCK_TICK: u64 = 10_000_000;

/// One allowance: a port range over protocols, for a scope, until a deadline.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantSlot {
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`) from which the allowance
    /// no longer allows; `u64::MAX` for ask markers.
    pub deadline_ns: u64,
    /// Cgroup id or tgid, by `scope`.
    pub scope_id: u64,
    /// Start time of the thread group for `GRANT_SCOPE_TGID`, in clock ticks.
    pub scope_start: u64,
    pub lo: u16,
    pub hi: u16,
    pub proto_mask: u8,
    /// `GRANT_KIND_*`.
    pub kind: u8,
    /// `GRANT_SCOPE_*`.
    pub scope: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<GrantSlot>() == 32);
// SAFETY: repr(C), three u64, two u16, four u8 (one explicit padding): no implicit
// padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for GrantSlot {}

/// Value of the grant tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantValue {
    pub n_slots: u32,
    pub _pad: u32,
    pub slots: [GrantSlot; GRANT_SLOTS],
}
const _: () = assert!(core::mem::size_of::<GrantValue>() == 8 + 32 * GRANT_SLOTS);
// SAFETY: repr(C), u32 + explicit u32 padding, then GrantSlot records: no implicit
// padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for GrantValue {}

impl GrantValue {
    pub const EMPTY: Self = Self {
        n_slots: 0,
        _pad: 0,
        slots: [GrantSlot {
            deadline_ns: 0,
            scope_id: 0,
            scope_start: 0,
            lo: 0,
            hi: 0,
            proto_mask: 0,
            kind: 0,
            scope: 0,
            _pad: 0,
        }; GRANT_SLOTS],
    };
}

/// The calling task, as a scope is compared with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub cgroup_id: u64,
    pub tgid: u64,
    /// Start of the thread group in clock ticks since boot.
    pub start_ticks: u64,
}

/// What the allowances of a value say about one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantMatch {
    /// A grant in scope allows it.
    Granted,
    /// An open window allows it.
    WindowOpen,
    /// Only an `ask` rule covers it.
    AskRequired,
    /// A `when` rule covers it, outside its window.
    OutsideWindow,
    /// A grant in scope covered it, and has lapsed.
    GrantExpired,
    /// Nothing covers it.
    None,
}

impl GrantSlot {
    #[inline(always)]
    #[must_use]
    pub fn covers(&self, port: u16, proto_mask: u8) -> bool {
        self.proto_mask & proto_mask != 0 && self.lo <= port && port <= self.hi
    }

    /// Whether the scope takes in the caller.
    #[inline(always)]
    #[must_use]
    pub fn in_scope(&self, c: &Caller) -> bool {
        match self.scope {
            GRANT_SCOPE_IDENTITY => true,
            GRANT_SCOPE_CGROUP => c.cgroup_id == self.scope_id,
            GRANT_SCOPE_TGID => c.tgid == self.scope_id && c.start_ticks == self.scope_start,
            _ => false,
        }
    }
}

/// Bit of `seen` for "a slot of kind k covers the call": `1 << k`; "a slot of kind k
/// in scope covered it and lapsed": `LAPSED << k`.
const LAPSED: u32 = 1 << 8;

impl GrantValue {
    /// Judge `port` over `proto_mask` at boot-clock time `now_ns` for `caller`.
    ///
    /// Written for the verifier: what the slots said is kept as bits computed from
    /// the slots' own (unknown) kinds rather than set to constants on branches, so
    /// that the paths through the unrolled loop merge instead of multiplying.
    #[inline(always)]
    #[must_use]
    pub fn judge(&self, port: u16, proto_mask: u8, now_ns: u64, caller: &Caller) -> GrantMatch {
        let mut seen: u32 = 0;
        let mut i = 0;
        while i < GRANT_SLOTS {
            if i as u32 >= self.n_slots {
                break;
            }
            let s = &self.slots[i];
            i += 1;
            if !s.covers(port, proto_mask) {
                continue;
            }
            let kind = u32::from(s.kind) & 7;
            seen |= 1 << kind;
            if s.kind == GRANT_KIND_ASK || !s.in_scope(caller) {
                continue;
            }
            if now_ns < s.deadline_ns {
                return if s.kind == GRANT_KIND_WINDOW {
                    GrantMatch::WindowOpen
                } else {
                    GrantMatch::Granted
                };
            }
            seen |= LAPSED << kind;
        }
        if seen & (1 << GRANT_KIND_ASK) != 0 {
            GrantMatch::AskRequired
        } else if seen & (LAPSED << GRANT_KIND_WINDOW) != 0 {
            GrantMatch::OutsideWindow
        } else if seen & (LAPSED << GRANT_KIND_GRANT) != 0 {
            GrantMatch::GrantExpired
        } else {
            GrantMatch::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: u8, scope: u8, id: u64, deadline_ns: u64) -> GrantSlot {
        GrantSlot {
            deadline_ns,
            scope_id: id,
            scope_start: 5,
            lo: 443,
            hi: 443,
            proto_mask: 1,
            kind,
            scope,
            _pad: 0,
        }
    }

    fn value(slots: &[GrantSlot]) -> GrantValue {
        let mut v = GrantValue::EMPTY;
        for (i, s) in slots.iter().enumerate() {
            v.slots[i] = *s;
        }
        v.n_slots = slots.len() as u32;
        v
    }

    const ME: Caller = Caller {
        cgroup_id: 77,
        tgid: 9,
        start_ticks: 5,
    };

    #[test]
    fn scope_deadline_and_kind_decide() {
        let me = &ME;
        let v = value(&[slot(GRANT_KIND_GRANT, GRANT_SCOPE_CGROUP, 77, 100)]);
        assert_eq!(v.judge(443, 1, 50, me), GrantMatch::Granted);
        assert_eq!(v.judge(443, 1, 100, me), GrantMatch::GrantExpired);
        assert_eq!(v.judge(443, 2, 50, me), GrantMatch::None);
        assert_eq!(v.judge(80, 1, 50, me), GrantMatch::None);
        let other = &Caller {
            cgroup_id: 78,
            ..ME
        };
        assert_eq!(v.judge(443, 1, 50, other), GrantMatch::None);
        // A later holder of the pid started at another time.
        let v = value(&[slot(GRANT_KIND_GRANT, GRANT_SCOPE_TGID, 9, 100)]);
        assert_eq!(v.judge(443, 1, 50, me), GrantMatch::Granted);
        let reused = &Caller {
            start_ticks: 6,
            ..ME
        };
        assert_eq!(v.judge(443, 1, 50, reused), GrantMatch::None);
        let v = value(&[
            slot(GRANT_KIND_WINDOW, GRANT_SCOPE_IDENTITY, 0, 0),
            slot(GRANT_KIND_ASK, GRANT_SCOPE_IDENTITY, 0, u64::MAX),
        ]);
        assert_eq!(v.judge(443, 1, 50, me), GrantMatch::AskRequired);
        let v = value(&[slot(GRANT_KIND_WINDOW, GRANT_SCOPE_IDENTITY, 0, 60)]);
        assert_eq!(v.judge(443, 1, 50, me), GrantMatch::WindowOpen);
        assert_eq!(v.judge(443, 1, 60, me), GrantMatch::OutsideWindow);
    }

    #[test]
    fn v6_keys_are_padded() {
        let k = grant_key_v6(0x0102_0304, [0xff; 16]);
        assert_eq!(&k[..4], &[1, 2, 3, 4]);
        assert_eq!(&k[20..], &[0; 4]);
    }
}
