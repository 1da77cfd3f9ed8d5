//! The Workload API's open connections, each counted against the share of its caller.
//!
//! Every local user may connect to the socket, so no caller may hold what another needs.
//! At accept a connection is keyed by its caller as the kernel attests it: the enrolled
//! identity and the caller's uid (an identity a binary selects may run under any user's
//! uid, and one user must not crowd out another's workloads), or "unenrolled, uid U". Each key holds at most its share; a new connection
//! past it pushes out that key's own oldest one, so a caller can only crowd out itself.
//! The unenrolled callers of all uids together hold a small pool, and all connections a
//! global cap, past which the key holding the most gives up its oldest. A connection
//! that has not made a request within [`IDLE_CUTOFF`] of its accept is cut off; one that
//! has (a `FetchX509SVID` stream waiting for rotations, say) is never cut for idling.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Connections one identity may hold under one uid: one stream per workload process is
/// the usual need, and a runaway identity then only crowds out its own workloads.
pub const IDENTITY_SHARE: usize = 64;
/// Connections the unenrolled callers of one uid may hold: they only ever get
/// PermissionDenied, which takes one connection to learn.
pub const UNENROLLED_UID_SHARE: usize = 4;
/// Connections all unenrolled callers may hold together, so that many uids cannot
/// crowd out the identities either.
pub const UNENROLLED_POOL: usize = 64;
/// Connections open at once. Each holds a pidfd besides its socket, so this also
/// bounds the descriptors callers can make the daemon hold.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time from accept to the first request: gRPC clients send theirs as soon as they
/// have connected, and a connection that never does only holds a place.
pub const IDLE_CUTOFF: Duration = Duration::from_secs(5);

/// Whom a connection counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A task of this identity (by name), running as this uid.
    Identity { name: String, uid: u32 },
    /// A caller with no identity (quarantined, exited or never enrolled), by its uid.
    Unenrolled { uid: u32 },
}

impl Key {
    const fn unenrolled(&self) -> bool {
        matches!(self, Self::Unenrolled { .. })
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Identity { name, uid } => write!(f, "identity {name}, uid {uid}"),
            Self::Unenrolled { uid } => write!(f, "unenrolled, uid {uid}"),
        }
    }
}

/// Why a connection was pushed out: the `reason` of
/// `zt_agent_svid_connections_evicted_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Its key (or the unenrolled pool) was at its share.
    Share,
    /// No request within the cut-off.
    Idle,
    /// All connections were at the global cap.
    Global,
}

impl Why {
    pub const ALL: [Self; 3] = [Self::Share, Self::Idle, Self::Global];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Share => "share",
            Self::Idle => "idle",
            Self::Global => "global",
        }
    }
}

/// The shares and the cut-off.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub identity: usize,
    pub unenrolled_uid: usize,
    pub unenrolled_pool: usize,
    pub total: usize,
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            identity: IDENTITY_SHARE,
            unenrolled_uid: UNENROLLED_UID_SHARE,
            unenrolled_pool: UNENROLLED_POOL,
            total: MAX_CONNECTIONS,
            idle: IDLE_CUTOFF,
        }
    }
}

/// One connection's place: whether it has made a request, whether it was pushed out,
/// and the task to wake when it is.
#[derive(Debug)]
pub struct SlotState {
    id: u64,
    key: Key,
    admitted: Instant,
    served: AtomicBool,
    evicted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl SlotState {
    /// A request arrived: the connection is no longer cut off for idling.
    pub fn served(&self) {
        self.served.store(true, Ordering::Relaxed);
    }

    #[must_use]
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    #[must_use]
    pub const fn key(&self) -> &Key {
        &self.key
    }

    /// Wake `waker` when the connection is pushed out; true if it already was.
    pub fn watch(&self, waker: &Waker) -> bool {
        {
            let mut w = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
            if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
                *w = Some(waker.clone());
            }
        }
        self.is_evicted()
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        let w = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// The open connections by key, each key's oldest first.
#[derive(Debug)]
pub struct Shares {
    limits: Limits,
    next: u64,
    by_key: HashMap<Key, VecDeque<Arc<SlotState>>>,
    total: usize,
    unenrolled: usize,
}

impl Shares {
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            next: 0,
            by_key: HashMap::new(),
            total: 0,
            unenrolled: 0,
        }
    }

    fn share(&self, key: &Key) -> usize {
        match key {
            Key::Identity { .. } => self.limits.identity,
            Key::Unenrolled { .. } => self.limits.unenrolled_uid,
        }
        .max(1)
    }

    /// Connections `key` holds.
    #[must_use]
    pub fn count(&self, key: &Key) -> usize {
        self.by_key.get(key).map_or(0, VecDeque::len)
    }

    /// Connections open.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.total
    }

    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The key among those `pick` takes that holds the most; of equals, the one with
    /// the oldest connection.
    fn fattest(&self, pick: impl Fn(&Key) -> bool) -> Option<Key> {
        self.by_key
            .iter()
            .filter(|(k, open)| pick(k) && !open.is_empty())
            .max_by_key(|(_, open)| {
                let oldest = open.front().map_or(u64::MAX, |s| s.id);
                (open.len(), std::cmp::Reverse(oldest))
            })
            .map(|(k, _)| k.clone())
    }

    fn take(&mut self, key: &Key, i: usize) -> Option<Arc<SlotState>> {
        let open = self.by_key.get_mut(key)?;
        let slot = open.remove(i)?;
        if open.is_empty() {
            self.by_key.remove(key);
        }
        self.total -= 1;
        if key.unenrolled() {
            self.unenrolled -= 1;
        }
        Some(slot)
    }

    /// Push out the oldest connection of `key`; false if it holds none.
    fn evict_oldest(&mut self, key: &Key) -> bool {
        match self.take(key, 0) {
            Some(s) => {
                s.evict();
                true
            }
            None => false,
        }
    }

    /// Admit a new connection of `key`, pushing out what its share, the unenrolled pool
    /// and the global cap ask for (already told to close); returns its place and why
    /// each one was pushed out.
    pub fn admit(&mut self, key: Key, now: Instant) -> (Arc<SlotState>, Vec<Why>) {
        let mut pushed = Vec::new();
        while self.count(&key) >= self.share(&key) && self.evict_oldest(&key) {
            pushed.push(Why::Share);
        }
        if key.unenrolled() {
            while self.unenrolled >= self.limits.unenrolled_pool.max(1) {
                match self.fattest(Key::unenrolled) {
                    Some(k) if self.evict_oldest(&k) => pushed.push(Why::Share),
                    _ => break,
                }
            }
        }
        while self.total >= self.limits.total.max(1) {
            match self.fattest(|_| true) {
                Some(k) if self.evict_oldest(&k) => pushed.push(Why::Global),
                _ => break,
            }
        }
        let slot = Arc::new(SlotState {
            id: self.next,
            key: key.clone(),
            admitted: now,
            served: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        self.next += 1;
        self.total += 1;
        if key.unenrolled() {
            self.unenrolled += 1;
        }
        self.by_key.entry(key).or_default().push_back(slot.clone());
        (slot, pushed)
    }

    /// Give a closed connection's place back (nothing if it was pushed out already).
    pub fn release(&mut self, slot: &SlotState) {
        let i = self
            .by_key
            .get(&slot.key)
            .and_then(|open| open.iter().position(|s| s.id == slot.id));
        if let Some(i) = i {
            self.take(&slot.key.clone(), i);
        }
    }

    /// Cut off the connections that have made no request within the cut-off of their
    /// accept; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let idle = self.limits.idle;
        let stale: Vec<(Key, u64)> = self
            .by_key
            .iter()
            .flat_map(|(k, open)| {
                open.iter()
                    .filter(|s| {
                        !s.served.load(Ordering::Relaxed)
                            && now.saturating_duration_since(s.admitted) >= idle
                    })
                    .map(|s| (k.clone(), s.id))
            })
            .collect();
        for (k, id) in &stale {
            let i = self
                .by_key
                .get(k)
                .and_then(|open| open.iter().position(|s| s.id == *id));
            if let Some(s) = i.and_then(|i| self.take(k, i)) {
                s.evict();
            }
        }
        stale.len()
    }
}

/// The table the server shares between its acceptor, its sweeper and its connections.
pub type Table = Arc<Mutex<Shares>>;

#[must_use]
pub fn table(limits: Limits) -> Table {
    Arc::new(Mutex::new(Shares::new(limits)))
}

/// Held by a connection for its whole life; gives its place back on drop.
#[derive(Debug)]
pub struct Slot {
    table: Table,
    pub state: Arc<SlotState>,
}

impl Slot {
    /// Admit a connection of `key` into `table`: its place, and why each connection it
    /// pushed out went.
    #[must_use]
    pub fn admit(table: &Table, key: Key) -> (Self, Vec<Why>) {
        let (state, pushed) = table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(key, Instant::now());
        (
            Self {
                table: table.clone(),
                state,
            },
            pushed,
        )
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(&self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            identity: 3,
            unenrolled_uid: 2,
            unenrolled_pool: 3,
            total: 6,
            idle: Duration::from_secs(5),
        }
    }

    fn id(name: &str) -> Key {
        Key::Identity {
            name: name.to_owned(),
            uid: 0,
        }
    }

    const fn uid(uid: u32) -> Key {
        Key::Unenrolled { uid }
    }

    #[test]
    fn admits_up_to_the_share_then_pushes_out_the_keys_own_oldest() {
        let mut s = Shares::new(limits());
        let t = Instant::now();
        let a: Vec<_> = (0..3).map(|_| s.admit(id("a"), t)).collect();
        assert!(a.iter().all(|(_, pushed)| pushed.is_empty()));
        let (b, pushed) = s.admit(id("b"), t);
        assert!(pushed.is_empty());
        // a is at its share: its own oldest goes, b's connection stays.
        let (a4, pushed) = s.admit(id("a"), t);
        assert_eq!(pushed, [Why::Share]);
        assert!(a[0].0.is_evicted());
        assert!(!a[1].0.is_evicted() && !a[2].0.is_evicted() && !a4.is_evicted());
        assert!(!b.is_evicted());
        assert_eq!(s.count(&id("a")), 3);
        assert_eq!(s.count(&id("b")), 1);
        assert_eq!(s.len(), 4);
        // Releasing a pushed-out connection gives nothing back twice.
        s.release(&a[0].0);
        assert_eq!(s.len(), 4);
        s.release(&a[1].0);
        assert_eq!(s.count(&id("a")), 2);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn unenrolled_callers_hold_a_few_per_uid_and_a_small_pool_together() {
        let mut s = Shares::new(limits());
        let t = Instant::now();
        let (x1, _) = s.admit(uid(65_534), t);
        let (x2, _) = s.admit(uid(65_534), t);
        let (x3, pushed) = s.admit(uid(65_534), t);
        assert_eq!(pushed, [Why::Share]);
        assert!(x1.is_evicted() && !x2.is_evicted() && !x3.is_evicted());
        let (e, _) = s.admit(id("e"), t);
        // Another uid: the pool (3) is full, so the uid holding the most gives way.
        let (y1, pushed) = s.admit(uid(1000), t);
        assert_eq!(pushed, []);
        let (y2, pushed) = s.admit(uid(1000), t);
        assert_eq!(pushed, [Why::Share]);
        // Nobody's uid held the most of the pool: its oldest gave way.
        assert!(x2.is_evicted() && !x3.is_evicted());
        assert!(!y1.is_evicted() && !y2.is_evicted());
        assert_eq!(s.count(&uid(65_534)) + s.count(&uid(1000)), 3);
        // The identity was never touched.
        assert!(!e.is_evicted());
        assert_eq!(s.count(&id("e")), 1);
    }

    #[test]
    fn at_the_global_cap_the_key_holding_the_most_gives_up_its_oldest() {
        let mut s = Shares::new(limits());
        let t = Instant::now();
        let a: Vec<_> = (0..3).map(|_| s.admit(id("a"), t).0).collect();
        let b: Vec<_> = (0..2).map(|_| s.admit(id("b"), t).0).collect();
        let (c, pushed) = s.admit(id("c"), t);
        assert!(pushed.is_empty());
        assert_eq!(s.len(), 6);
        // Full: a holds the most and gives up its oldest; b and c keep theirs.
        let (d, pushed) = s.admit(id("d"), t);
        assert_eq!(pushed, [Why::Global]);
        assert!(a[0].is_evicted() && !a[1].is_evicted());
        assert!(b.iter().all(|x| !x.is_evicted()) && !c.is_evicted() && !d.is_evicted());
        assert_eq!(s.len(), 6);
        // a and b now hold two each: a's oldest is older, so a gives way again.
        let _e = s.admit(id("e"), t);
        assert!(a[1].is_evicted() && !b[0].is_evicted());
        assert_eq!(s.count(&id("a")), 1);
    }

    #[test]
    fn a_connection_without_a_request_is_cut_off_one_with_a_request_never() {
        let mut s = Shares::new(limits());
        let t = Instant::now();
        let (idle, _) = s.admit(id("a"), t);
        let (stream, _) = s.admit(id("a"), t);
        let (late, _) = s.admit(uid(7), t + Duration::from_secs(3));
        stream.served();
        assert_eq!(s.sweep(t + Duration::from_secs(4)), 0);
        assert_eq!(s.sweep(t + Duration::from_secs(5)), 1);
        assert!(idle.is_evicted() && !stream.is_evicted() && !late.is_evicted());
        assert_eq!(s.sweep(t + Duration::from_secs(3600)), 1);
        assert!(late.is_evicted() && !stream.is_evicted());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn eviction_wakes_the_reader() {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let table = table(limits());
        let (first, _) = Slot::admit(&table, uid(1));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        assert!(!first.state.watch(&waker));
        let (_second, _) = Slot::admit(&table, uid(1));
        let (_third, pushed) = Slot::admit(&table, uid(1));
        assert_eq!(pushed, [Why::Share]);
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(first.state.watch(&waker));
        drop(first);
        assert_eq!(table.lock().map(|t| t.len()).unwrap_or(0), 2);
    }
}
