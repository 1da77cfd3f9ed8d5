//! Accounting: each packet of a tagged socket adds its payload to its identity's
//! per-CPU totals and to its flow (identity, peer, port, protocol); a limit the daemon
//! marked as reached drops the packet instead. Only packets whose mark carries
//! `SOCK_MARK_ENROLLED` get here, so unenrolled traffic pays one load.

use aya_ebpf::bindings::BPF_NOEXIST;
use zt_agent_common::{
    FLOW_FLAG_LIMITED, FlowBytes, FlowKey, IDENTITY_NONE, MAX_IDENTITIES, STATE_LIMITED, errors,
};

use crate::events::count_error;
use crate::kernel::atomic_add;
use crate::maps::{ZT_FLOWS, ZT_ID_STATE, ZT_TRAFFIC};

/// What became of one packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accounted {
    Counted,
    /// It carries payload and a limit of its identity or flow is reached.
    Limited,
}

/// The daemon's runtime flags for `identity` (`STATE_*`).
#[inline(always)]
pub(crate) fn state_flags(identity: u32) -> u32 {
    ZT_ID_STATE.get(identity).map_or(0, |s| s.flags)
}

/// Whether the flow `key` is past a per-destination limit.
#[inline(always)]
pub(crate) fn flow_limited(key: &FlowKey) -> bool {
    // SAFETY: pointer from a successful lookup; flags is a plain u64 load.
    ZT_FLOWS
        .get_ptr(key)
        .is_some_and(|p| unsafe { (*p).flags } & FLOW_FLAG_LIMITED != 0)
}

/// Count `tx` bytes sent and `rx` received on `key`'s flow. A packet with payload to
/// send (`tx > 0`) is refused when a limit is reached; received bytes are always
/// counted (they have arrived).
#[inline(always)]
pub(crate) fn account(key: &FlowKey, tx: u64, rx: u64) -> Accounted {
    let id = key.identity;
    if id == IDENTITY_NONE || id >= MAX_IDENTITIES {
        return Accounted::Counted;
    }
    let Some(t) = ZT_TRAFFIC.get_ptr_mut(id) else {
        return Accounted::Counted;
    };
    let mut out = Accounted::Counted;
    let mut tx = tx;
    if tx > 0 && state_flags(id) & STATE_LIMITED != 0 {
        out = Accounted::Limited;
        tx = 0;
    }
    if let Some(f) = ZT_FLOWS.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup; the byte counts only change by
        // atomic adds, the flags only by the daemon.
        unsafe {
            if tx > 0 && (*f).flags & FLOW_FLAG_LIMITED != 0 {
                out = Accounted::Limited;
                tx = 0;
            }
            if tx > 0 {
                atomic_add(&raw mut (*f).tx_bytes, tx);
            }
            if rx > 0 {
                atomic_add(&raw mut (*f).rx_bytes, rx);
            }
        }
    } else if tx > 0 || rx > 0 {
        let v = FlowBytes {
            tx_bytes: tx,
            rx_bytes: rx,
            flags: 0,
        };
        if ZT_FLOWS.insert(key, &v, BPF_NOEXIST.into()).is_err() {
            match ZT_FLOWS.get_ptr_mut(key) {
                // Another CPU made the entry first.
                // SAFETY: as above.
                Some(f) => unsafe {
                    atomic_add(&raw mut (*f).tx_bytes, tx);
                    atomic_add(&raw mut (*f).rx_bytes, rx);
                },
                // Full: the totals below still count every byte.
                None => count_error(errors::FLOWS_FULL),
            }
        }
    }
    // SAFETY: per-CPU slot, only this CPU writes it.
    unsafe {
        if out == Accounted::Limited {
            (*t).limit_drops += 1;
        }
        (*t).tx_bytes += tx;
        (*t).rx_bytes += rx;
    }
    out
}
