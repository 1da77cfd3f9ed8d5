//! Policy lookups: the judgement of one identity for one destination, from the
//! policy tries and the addresses DNS answers installed; for one peer, from the
//! ingress tries; for one port to bind.

use aya_ebpf::{helpers::generated::bpf_ktime_get_boot_ns, maps::lpm_trie::Key};
use zt_agent_common::{
    DnsAllowKey, GrantMatch, GrantValue, IDENTITY_FLAG_AUDIT, IDENTITY_FLAG_IN_POLICY,
    IDENTITY_KEY_BITS, KeyV4, KeyV6, PolicyValue, Reason, Verdict,
};

use crate::kernel::{AF_INET, AF_INET6, caller};
use crate::maps::{
    Tries, ZT_DNS_ALLOW, ZT_GRANTS_V4, ZT_GRANTS_V6, ZT_IN_PORTS, ZT_IN_V4, ZT_IN_V6, ZT_POLICY_V4,
    ZT_POLICY_V6,
};

/// Result of judging one identity.
#[derive(Clone, Copy)]
pub(crate) struct Judgement {
    pub(crate) verdict: Verdict,
    pub(crate) reason: Reason,
}

pub(crate) const ALLOW: Judgement = Judgement {
    verdict: Verdict::Allow,
    reason: Reason::RuleMatched,
};

#[inline(always)]
fn judge_value(v: Option<*mut PolicyValue>, port: u16, proto_mask: u8) -> Judgement {
    match v {
        // Not in the policy (removed, quarantined, or no policy installed yet): deny all.
        None => Judgement {
            verdict: Verdict::Deny,
            reason: Reason::IdentityRemoved,
        },
        Some(p) => {
            // SAFETY: pointer from a successful lookup in the current inner trie.
            let v = unsafe { &*p };
            if v.allows(port, proto_mask) {
                ALLOW
            } else if v.flags & IDENTITY_FLAG_AUDIT != 0 {
                Judgement {
                    verdict: Verdict::Audit,
                    reason: Reason::NoRule,
                }
            } else {
                Judgement {
                    verdict: Verdict::Deny,
                    reason: Reason::NoRule,
                }
            }
        }
    }
}

/// The judgement of `tries` for one identity and IPv4 address.
#[inline(always)]
fn trie_v4(tries: &Tries<KeyV4>, identity: u32, addr: [u8; 4], port: u16, mask: u8) -> Judgement {
    let key = Key {
        prefix_len: IDENTITY_KEY_BITS + 32,
        data: zt_agent_common::key_v4(identity, addr),
    };
    judge_value(tries.get_value_ptr_mut(0, &key), port, mask)
}

#[inline(always)]
fn trie_v6(tries: &Tries<KeyV6>, identity: u32, addr: [u8; 16], port: u16, mask: u8) -> Judgement {
    let key = Key {
        prefix_len: IDENTITY_KEY_BITS + 128,
        data: zt_agent_common::key_v6(identity, addr),
    };
    judge_value(tries.get_value_ptr_mut(0, &key), port, mask)
}

/// Egress: may `identity` reach this IPv4 destination.
#[inline(always)]
pub(crate) fn judge_v4(identity: u32, addr: [u8; 4], port: u16, proto_mask: u8) -> Judgement {
    let j = trie_v4(&ZT_POLICY_V4, identity, addr, port, proto_mask);
    let mut a = [0u8; 16];
    a[0] = addr[0];
    a[1] = addr[1];
    a[2] = addr[2];
    a[3] = addr[3];
    beyond_policy(j, identity, AF_INET, a, port, proto_mask, || {
        ZT_GRANTS_V4.get(&Key {
            prefix_len: IDENTITY_KEY_BITS + 32,
            data: zt_agent_common::key_v4(identity, addr),
        })
    })
}

#[inline(always)]
pub(crate) fn judge_v6(identity: u32, addr: [u8; 16], port: u16, proto_mask: u8) -> Judgement {
    let j = trie_v6(&ZT_POLICY_V6, identity, addr, port, proto_mask);
    beyond_policy(j, identity, AF_INET6, addr, port, proto_mask, || {
        ZT_GRANTS_V6.get(&Key {
            prefix_len: IDENTITY_KEY_BITS + 128,
            data: zt_agent_common::grant_key_v6(identity, addr),
        })
    })
}

/// No rule allows the destination: a DNS answer, then a grant or a window, may.
#[inline(always)]
fn beyond_policy(
    j: Judgement,
    identity: u32,
    family: u16,
    addr: [u8; 16],
    port: u16,
    proto_mask: u8,
    grant_entry: impl FnOnce() -> Option<&'static GrantValue>,
) -> Judgement {
    let j = dns_learned(j, identity, family, addr, port, proto_mask);
    if (j.reason as u8) != (Reason::NoRule as u8) {
        return j;
    }
    grants(j, grant_entry(), port, proto_mask)
}

/// Nothing else allows the destination: a grant or an open window may, for the
/// calling task, until its deadline; an `ask` rule or a closed window says why not.
#[inline(always)]
fn grants(j: Judgement, v: Option<&GrantValue>, port: u16, proto_mask: u8) -> Judgement {
    let Some(v) = v else {
        return j;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let reason = match v.judge(port, proto_mask, now, &caller()) {
        GrantMatch::Granted => {
            return Judgement {
                verdict: Verdict::Allow,
                reason: Reason::Granted,
            };
        }
        GrantMatch::WindowOpen => {
            return Judgement {
                verdict: Verdict::Allow,
                reason: Reason::WindowOpen,
            };
        }
        GrantMatch::AskRequired => Reason::AskRequired,
        GrantMatch::OutsideWindow => Reason::OutsideWindow,
        GrantMatch::GrantExpired => Reason::GrantExpired,
        GrantMatch::None => return j,
    };
    Judgement {
        verdict: j.verdict,
        reason,
    }
}

/// Ingress: may this IPv4 peer reach `identity` on its local `port`.
#[inline(always)]
pub(crate) fn judge_in_v4(identity: u32, peer: [u8; 4], port: u16, proto_mask: u8) -> Judgement {
    trie_v4(&ZT_IN_V4, identity, peer, port, proto_mask)
}

#[inline(always)]
pub(crate) fn judge_in_v6(identity: u32, peer: [u8; 16], port: u16, proto_mask: u8) -> Judgement {
    trie_v6(&ZT_IN_V6, identity, peer, port, proto_mask)
}

/// May `identity` bind `port` over the protocol bit `proto_mask`: some ingress rule
/// opens it, to some peer.
#[inline(always)]
pub(crate) fn judge_bind(identity: u32, port: u16, proto_mask: u8) -> Judgement {
    let v = ZT_IN_PORTS
        .get_ptr_mut(identity)
        // SAFETY: pointer from a successful lookup, read once.
        .filter(|p| unsafe { (**p).flags } & IDENTITY_FLAG_IN_POLICY != 0);
    judge_value(v, port, proto_mask)
}

/// No rule covers the destination: a DNS answer may have installed it for this
/// identity, for some ports, until a deadline.
#[inline(always)]
fn dns_learned(
    j: Judgement,
    identity: u32,
    family: u16,
    addr: [u8; 16],
    port: u16,
    proto_mask: u8,
) -> Judgement {
    if (j.reason as u8) != (Reason::NoRule as u8) {
        return j;
    }
    let key = DnsAllowKey {
        identity,
        family: family as u32,
        addr,
    };
    let Some(v) = ZT_DNS_ALLOW.get_ptr(&key) else {
        return j;
    };
    // SAFETY: pointer from a successful lookup; helper without arguments.
    let ok = unsafe { (*v).allows(port, proto_mask, bpf_ktime_get_boot_ns()) };
    if ok {
        Judgement {
            verdict: Verdict::Allow,
            reason: Reason::DnsLearned,
        }
    } else {
        j
    }
}

/// Root entry of an identity (no address bits): carries its flags.
/// `None` means the identity is not in the installed policy.
#[inline(always)]
fn identity_flags(identity: u32) -> Option<u32> {
    let key = Key {
        prefix_len: IDENTITY_KEY_BITS,
        data: zt_agent_common::key_v4(identity, [0; 4]),
    };
    // SAFETY: pointer from a successful lookup.
    ZT_POLICY_V4
        .get_value_ptr_mut(0, &key)
        .map(|p| unsafe { (*p).flags })
}

/// The stricter of two judgements.
#[inline(always)]
pub(crate) fn worst(a: Judgement, b: Judgement) -> Judgement {
    if (b.verdict as u8) == (Verdict::Deny as u8) {
        return b;
    }
    if (a.verdict as u8) == (Verdict::Deny as u8) {
        return a;
    }
    if (b.verdict as u8) == (Verdict::Audit as u8) {
        return b;
    }
    a
}

/// Deny, or audit when the identity is in audit mode.
#[inline(always)]
pub(crate) fn mode_judgement(identity: u32, reason: Reason) -> Judgement {
    match identity_flags(identity) {
        Some(f) if f & IDENTITY_FLAG_AUDIT != 0 => Judgement {
            verdict: Verdict::Audit,
            reason,
        },
        _ => Judgement {
            verdict: Verdict::Deny,
            reason,
        },
    }
}
