//! Bounded events: a budget per identity and cause, so that no workload (and no local
//! user knocking at the resolver) can fill the disk or drown a later event.
//!
//! Every event is judged by two token buckets before anything is spent on it (no /proc
//! read, no digest, no JSON): one for its cause (identity, kind, verdict, reason) and
//! one for its identity's class. Security-relevant events (exec denials and audits,
//! `file` and `tamper`) have a class of their own, so a flood of connect denials never
//! uses up the budget of an exec denial that follows it. An event over budget is
//! counted (`zt_agent_events_suppressed_total{identity,kind}`) and, once per interval,
//! the sink writes one summary line per cause saying how many were left out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

/// Refill rate and depth of one bucket, in events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub per_second: f64,
    pub burst: f64,
}

/// An identity's budget for a class is this many times the budget of one cause: a few
/// causes may be busy at once, but not every cause an identity can produce.
const IDENTITY_FACTOR: f64 = 5.0;
/// A bucket left alone this long is full again, and forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// What an event is about, as its JSON line says it.
#[derive(Clone, Copy, Debug)]
pub struct Cause<'a> {
    pub identity: &'a str,
    pub kind: &'static str,
    pub verdict: &'static str,
    pub reason: &'static str,
}

impl Cause<'_> {
    /// Events an attacker would like to hide behind a flood.
    fn security(&self) -> bool {
        matches!(self.kind, "file" | "tamper") || (self.kind == "exec" && self.verdict != "allow")
    }
}

/// How many events of one cause were left out since the last summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppressed {
    pub identity: String,
    pub kind: &'static str,
    pub verdict: &'static str,
    pub reason: &'static str,
    pub count: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(b: Budget, now: Instant) -> Self {
        Self {
            tokens: b.burst,
            at: now,
        }
    }

    fn refill(&mut self, b: Budget, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = dt.mul_add(b.per_second, self.tokens).min(b.burst);
        self.at = now;
    }
}

/// (kind, verdict, reason) of one identity's events.
type CauseKey = (&'static str, &'static str, &'static str);

/// One identity's buckets: per cause (with what it suppressed since the last summary),
/// and per class (ordinary, security).
#[derive(Debug)]
struct Buckets {
    causes: HashMap<CauseKey, (Bucket, u64)>,
    classes: [Bucket; 2],
}

/// The buckets; pure, with the time passed in.
#[derive(Debug)]
pub struct Limiter {
    cause: Budget,
    /// By identity, looked up without allocating on the hot path.
    identities: HashMap<String, Buckets>,
}

impl Limiter {
    #[must_use]
    pub fn new(cause: Budget) -> Self {
        Self {
            cause,
            identities: HashMap::new(),
        }
    }

    fn identity_budget(&self) -> Budget {
        Budget {
            per_second: self.cause.per_second * IDENTITY_FACTOR,
            burst: self.cause.burst * IDENTITY_FACTOR,
        }
    }

    /// Whether an event of `c` at `now` fits its budgets; takes from both if it does,
    /// counts it as suppressed if it does not.
    pub fn admit(&mut self, c: Cause<'_>, now: Instant) -> bool {
        let (cb, ib) = (self.cause, self.identity_budget());
        if !self.identities.contains_key(c.identity) {
            self.identities.insert(
                c.identity.to_owned(),
                Buckets {
                    causes: HashMap::new(),
                    classes: [Bucket::full(ib, now); 2],
                },
            );
        }
        let Some(b) = self.identities.get_mut(c.identity) else {
            return true;
        };
        let id = &mut b.classes[usize::from(c.security())];
        id.refill(ib, now);
        let (cause, suppressed) = b
            .causes
            .entry((c.kind, c.verdict, c.reason))
            .or_insert_with(|| (Bucket::full(cb, now), 0));
        cause.refill(cb, now);
        if cause.tokens >= 1.0 && id.tokens >= 1.0 {
            cause.tokens -= 1.0;
            id.tokens -= 1.0;
            true
        } else {
            *suppressed += 1;
            false
        }
    }

    /// What was suppressed since the last call, per cause; forgets buckets left alone
    /// long enough to be full again.
    pub fn take(&mut self, now: Instant) -> Vec<Suppressed> {
        let mut out = Vec::new();
        for (identity, b) in &mut self.identities {
            for ((kind, verdict, reason), (_, n)) in &mut b.causes {
                if *n > 0 {
                    out.push(Suppressed {
                        identity: identity.clone(),
                        kind,
                        verdict,
                        reason,
                        count: std::mem::take(n),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.identity, a.kind, a.reason).cmp(&(&b.identity, b.kind, b.reason)));
        let idle = |at: Instant| now.saturating_duration_since(at) > FORGET_AFTER;
        for b in self.identities.values_mut() {
            b.causes.retain(|_, (c, _)| !idle(c.at));
        }
        self.identities
            .retain(|_, b| !b.causes.is_empty() || b.classes.iter().any(|c| !idle(c.at)));
        out
    }
}

/// The limiter shared by the producers (which ask before they spend anything on an
/// event) and the sink (which writes the summaries).
#[derive(Clone)]
pub struct Limits {
    limiter: Arc<Mutex<Limiter>>,
    suppressed: IntCounterVec,
}

impl Limits {
    #[must_use]
    pub fn new(cause: Budget, suppressed: IntCounterVec) -> Self {
        Self {
            limiter: Arc::new(Mutex::new(Limiter::new(cause))),
            suppressed,
        }
    }

    /// Whether to report an event of `c` now.
    #[must_use]
    pub fn admit(&self, c: Cause<'_>) -> bool {
        let ok = self
            .limiter
            .lock()
            .map(|mut l| l.admit(c, Instant::now()))
            .unwrap_or(true);
        if !ok {
            self.suppressed
                .with_label_values(&[c.identity, c.kind])
                .inc();
        }
        ok
    }

    /// What was suppressed since the last call.
    #[must_use]
    pub fn take(&self) -> Vec<Suppressed> {
        self.limiter
            .lock()
            .map(|mut l| l.take(Instant::now()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Budget = Budget {
        per_second: 10.0,
        burst: 20.0,
    };

    fn cause<'a>(identity: &'a str, kind: &'static str, verdict: &'static str) -> Cause<'a> {
        Cause {
            identity,
            kind,
            verdict,
            reason: "no_rule",
        }
    }

    #[test]
    fn a_flood_is_cut_to_the_budget_and_summed_up() {
        let mut l = Limiter::new(B);
        let t0 = Instant::now();
        let flood = cause("a", "connect", "deny");
        let passed = (0..10_000).filter(|_| l.admit(flood, t0)).count();
        assert_eq!(passed, 20, "the burst");
        // A second later the bucket has refilled by the rate.
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..10_000).filter(|_| l.admit(flood, t1)).count();
        assert_eq!(passed, 10);
        let s = l.take(t1);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].count, 20_000 - 30);
        assert_eq!((s[0].identity.as_str(), s[0].kind), ("a", "connect"));
        // Counted once: the next summary has nothing new.
        assert!(l.take(t1).is_empty());
        // After the flood, the next event of the same cause is written again.
        assert!(l.admit(flood, t1 + Duration::from_secs(1)));
    }

    #[test]
    fn another_identity_and_security_events_keep_their_own_budget() {
        let mut l = Limiter::new(B);
        let t0 = Instant::now();
        // Identity a floods every ordinary cause it has.
        for kind in [
            "connect",
            "sendmsg",
            "socket",
            "setsockopt",
            "packet",
            "dns",
        ] {
            for _ in 0..1000 {
                let _ = l.admit(cause("a", kind, "deny"), t0);
            }
        }
        assert!(!l.admit(cause("a", "connect", "deny"), t0));
        // Its identity budget is spent: a fresh ordinary cause of a is cut too ...
        assert!(!l.admit(cause("a", "sendmsg", "audit"), t0));
        // ... but not its exec denials, nor another identity's first deny.
        assert!(l.admit(cause("a", "exec", "deny"), t0));
        assert!(l.admit(cause("a", "tamper", "deny"), t0));
        assert!(l.admit(cause("b", "connect", "deny"), t0));
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let mut l = Limiter::new(B);
        let t0 = Instant::now();
        for n in 0..100 {
            let _ = l.admit(cause(&format!("i{n}"), "connect", "deny"), t0);
        }
        assert_eq!(l.identities.len(), 100);
        let _ = l.take(t0 + FORGET_AFTER + Duration::from_secs(1));
        assert!(l.identities.is_empty());
    }
}
