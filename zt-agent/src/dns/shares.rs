//! Each identity's share of the resolver: its TCP connections and its queries in
//! flight, so that no identity can starve another by holding connections open or by
//! asking names that are slow to answer.
//!
//! TCP: an identity holds at most [`TCP_PER_IDENTITY`] connections, all together at
//! most [`TCP_CONNECTIONS`]. A new connection is always taken: past its identity's
//! share it replaces that identity's oldest connection, and when all connections are
//! taken it replaces the oldest connection of the identity that holds the most. An
//! identity with fewer connections than every other can therefore always connect.
//!
//! Queries: an identity has at most [`PER_IDENTITY_IN_FLIGHT`] in flight, all together
//! [`IN_FLIGHT`]; an identity with fewer than [`IN_FLIGHT_FLOOR`] in flight is always
//! let in, whatever the others hold. A query past its share is dropped (a stub
//! retries).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// TCP connections open at once, all identities together.
pub const TCP_CONNECTIONS: usize = 256;
/// TCP connections one identity may hold.
pub const TCP_PER_IDENTITY: usize = 32;
/// Queries handled at once, all identities together (past the floor).
pub const IN_FLIGHT: usize = 512;
/// Queries of one identity handled at once.
pub const PER_IDENTITY_IN_FLIGHT: usize = 64;
/// Queries an identity always has room for.
pub const IN_FLIGHT_FLOOR: usize = 8;

#[derive(Default)]
struct Table {
    /// Per identity, its connections' eviction signals, oldest first.
    conns: HashMap<u32, VecDeque<Arc<Notify>>>,
    conns_total: usize,
    in_flight: HashMap<u32, usize>,
    in_flight_total: usize,
}

impl Table {
    fn evict_oldest(&mut self, identity: u32) {
        let Some(q) = self.conns.get_mut(&identity) else {
            return;
        };
        if let Some(old) = q.pop_front() {
            old.notify_one();
            self.conns_total -= 1;
        }
        if q.is_empty() {
            self.conns.remove(&identity);
        }
    }
}

/// The resolver's shares; cheap to clone.
#[derive(Clone, Default)]
pub struct Shares {
    table: Arc<Mutex<Table>>,
}

/// A TCP connection's place; given back on drop. Its task ends when `evicted` fires.
pub struct Conn {
    table: Arc<Mutex<Table>>,
    identity: u32,
    pub evicted: Arc<Notify>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Ok(mut t) = self.table.lock() else { return };
        let Some(q) = t.conns.get_mut(&self.identity) else {
            return;
        };
        let before = q.len();
        q.retain(|n| !Arc::ptr_eq(n, &self.evicted));
        let gone = before - q.len();
        if q.is_empty() {
            t.conns.remove(&self.identity);
        }
        t.conns_total -= gone;
    }
}

/// A query's place; given back on drop.
pub struct Query {
    table: Arc<Mutex<Table>>,
    identity: u32,
}

impl Drop for Query {
    fn drop(&mut self) {
        let Ok(mut t) = self.table.lock() else { return };
        if let Some(n) = t.in_flight.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                t.in_flight.remove(&self.identity);
            }
            t.in_flight_total -= 1;
        }
    }
}

impl Shares {
    /// A place for a new TCP connection of `identity`, making room as the module says.
    #[must_use]
    pub fn connect(&self, identity: u32) -> Option<Conn> {
        let mut t = self.table.lock().ok()?;
        let mine = t.conns.get(&identity).map_or(0, VecDeque::len);
        if mine >= TCP_PER_IDENTITY {
            t.evict_oldest(identity);
        } else if t.conns_total >= TCP_CONNECTIONS {
            let largest = t
                .conns
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(id, _)| *id);
            if let Some(victim) = largest {
                t.evict_oldest(victim);
            }
        }
        let evicted = Arc::new(Notify::new());
        t.conns
            .entry(identity)
            .or_default()
            .push_back(evicted.clone());
        t.conns_total += 1;
        Some(Conn {
            table: self.table.clone(),
            identity,
            evicted,
        })
    }

    /// A place for one query of `identity`, or `None` when its share is used up.
    #[must_use]
    pub fn query(&self, identity: u32) -> Option<Query> {
        let mut t = self.table.lock().ok()?;
        let mine = t.in_flight.get(&identity).copied().unwrap_or(0);
        if mine >= PER_IDENTITY_IN_FLIGHT
            || (t.in_flight_total >= IN_FLIGHT && mine >= IN_FLIGHT_FLOOR)
        {
            return None;
        }
        *t.in_flight.entry(identity).or_default() += 1;
        t.in_flight_total += 1;
        Some(Query {
            table: self.table.clone(),
            identity,
        })
    }

    /// (connections, queries in flight) of `identity`.
    #[must_use]
    pub fn held(&self, identity: u32) -> (usize, usize) {
        self.table.lock().map_or((0, 0), |t| {
            (
                t.conns.get(&identity).map_or(0, VecDeque::len),
                t.in_flight.get(&identity).copied().unwrap_or(0),
            )
        })
    }

    /// Connections open, all identities together.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.table.lock().map_or(0, |t| t.conns_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identity_holding_connections_never_keeps_another_out() {
        let s = Shares::default();
        // Identity 1 opens far more than its share: it keeps only its newest ones.
        let hog: Vec<Conn> = (0..1000).filter_map(|_| s.connect(1)).collect();
        assert_eq!(s.held(1).0, TCP_PER_IDENTITY);
        assert_eq!(hog.len(), 1000, "every connection is taken ...");
        // ... and the oldest were told to go.
        assert_eq!(s.connections(), TCP_PER_IDENTITY);
        drop(hog);
        assert_eq!(s.connections(), 0);

        // Many identities fill the resolver; one more still gets in, at the expense of
        // the largest holder.
        let mut all: Vec<Conn> = Vec::new();
        for id in 1..=8 {
            all.extend((0..TCP_PER_IDENTITY).filter_map(|_| s.connect(id)));
        }
        assert_eq!(s.connections(), TCP_CONNECTIONS);
        let late = s.connect(99).expect("room is made");
        assert_eq!(s.connections(), TCP_CONNECTIONS);
        assert_eq!(s.held(99).0, 1);
        let left: usize = (1..=8).map(|id| s.held(id).0).sum();
        assert_eq!(left, TCP_CONNECTIONS - 1);
        drop(late);
        drop(all);
        assert_eq!(s.connections(), 0);
    }

    #[test]
    fn evicted_connections_are_signalled_and_given_back_once() {
        let s = Shares::default();
        let first = s.connect(7).expect("c");
        let rest: Vec<Conn> = (0..TCP_PER_IDENTITY).filter_map(|_| s.connect(7)).collect();
        // The first was pushed out: its signal holds a permit for its task.
        let waker = notified_now(&first.evicted);
        assert!(waker, "the oldest connection was told to go");
        drop(first);
        assert_eq!(s.held(7).0, TCP_PER_IDENTITY);
        drop(rest);
        assert_eq!(s.connections(), 0);
    }

    /// Whether `n` holds a stored notification, without a runtime.
    fn notified_now(n: &Notify) -> bool {
        use std::future::Future as _;
        let fut = n.notified();
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        fut.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn every_identity_keeps_a_floor_of_queries() {
        let s = Shares::default();
        let one: Vec<Query> = (0..1000).filter_map(|_| s.query(1)).collect();
        assert_eq!(one.len(), PER_IDENTITY_IN_FLIGHT);
        // Others fill the rest of the resolver ...
        let mut held: Vec<Query> = Vec::new();
        for id in 2..100 {
            held.extend((0..PER_IDENTITY_IN_FLIGHT).filter_map(|_| s.query(id)));
        }
        // ... and a newcomer still has its floor, no more.
        let late: Vec<Query> = (0..100).filter_map(|_| s.query(500)).collect();
        assert_eq!(late.len(), IN_FLIGHT_FLOOR);
        drop(held);
        assert!(
            s.query(500).is_some(),
            "room again once the others are done"
        );
    }
}
