//! The per-CPU counter arrays: verdicts per identity and protocol, exec verdicts per
//! identity, and kernel-side errors.

use crate::event::Verdict;
use crate::identity::MAX_IDENTITIES;

/// Verdicts, the second index of the verdict counters.
pub const VERDICT_COUNT: u32 = Verdict::ALL.len() as u32;

/// Protocol index of the verdict counters.
pub const PROTO_TCP: u8 = 0;
pub const PROTO_UDP: u8 = 1;
pub const PROTO_OTHER: u8 = 2;
pub const PROTO_COUNT: u32 = 3;
/// The `protocol` label of each protocol index.
pub const PROTO_NAMES: [&str; PROTO_COUNT as usize] = ["tcp", "udp", "other"];

/// Index into the per-CPU verdict counters.
#[inline(always)]
#[must_use]
pub const fn verdict_index(identity: u32, verdict: u8, proto: u8) -> u32 {
    (identity * VERDICT_COUNT + verdict as u32) * PROTO_COUNT + proto as u32
}
pub const VERDICT_SLOTS: u32 = MAX_IDENTITIES * VERDICT_COUNT * PROTO_COUNT;

/// Index into the per-CPU exec verdict counters.
#[inline(always)]
#[must_use]
pub const fn exec_verdict_index(identity: u32, verdict: u8) -> u32 {
    identity * VERDICT_COUNT + verdict as u32
}
pub const EXEC_VERDICT_SLOTS: u32 = MAX_IDENTITIES * VERDICT_COUNT;

/// Counter slots of the per-CPU error array.
pub mod errors {
    wire_enum! {
        /// What went wrong in a program; the slot of its counter and its `reason` label.
        pub enum ErrorSlot: u32 {
            /// An event was dropped because the ring buffer was full.
            RingbufFull = 0 => "ringbuf_full",
            /// The task table was full, so a child could not inherit its parent's identity.
            TasksFull = 1 => "tasks_full",
            /// Socket-local storage could not be created.
            SkStorage = 2 => "sk_storage",
            /// A SIGKILL (a disallowed exec, a fork past the task share) could not be sent.
            KillFailed = 3 => "kill_failed",
            /// A packet to the resolver was dropped: its identity sent past its budget.
            DnsBudget = 4 => "dns_budget",
            /// The flow table was full: a packet's bytes went to its identity's totals only.
            FlowsFull = 5 => "flows_full",
        }
    }

    pub const RINGBUF_FULL: u32 = ErrorSlot::RingbufFull as u32;
    pub const TASKS_FULL: u32 = ErrorSlot::TasksFull as u32;
    pub const SK_STORAGE: u32 = ErrorSlot::SkStorage as u32;
    pub const KILL_FAILED: u32 = ErrorSlot::KillFailed as u32;
    pub const DNS_BUDGET: u32 = ErrorSlot::DnsBudget as u32;
    pub const FLOWS_FULL: u32 = ErrorSlot::FlowsFull as u32;
    pub const COUNT: u32 = ErrorSlot::ALL.len() as u32;
    /// The `reason` label of each slot.
    pub const NAMES: [&str; COUNT as usize] = {
        let mut names = [""; COUNT as usize];
        let mut i = 0;
        while i < names.len() {
            names[i] = ErrorSlot::ALL[i].as_str();
            i += 1;
        }
        names
    };
}
