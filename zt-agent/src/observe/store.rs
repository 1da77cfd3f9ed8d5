//! What enrolled identities did, in an embedded SQLite database in the state dir
//! (`observations.db`, root only): flows (identity, destination, the DNS name it came
//! from, port, protocol, binary, verdict) and execs (identity, file, digest, verdict),
//! each with a count and when it was first and last seen (an exec's digest is the
//! latest known: records the event budgets held back come without one). Bounded: rows older than the
//! retention go, and past the row cap the least recently seen go first.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

const FILE: &str = "observations.db";

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("observation store {0}")]
    File(#[from] crate::sys::db::DbFileError),
    #[error("observation store: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// One flow as seen: counts add up per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub identity: String,
    /// The address, as text.
    pub dest: String,
    /// The DNS name the identity got this address from, if it asked the resolver.
    pub name: Option<String>,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub binary: Option<String>,
    /// `allow`, `audit` or `deny`.
    pub verdict: &'static str,
}

/// Bytes one identity exchanged with one peer: sums add up per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bytes {
    pub identity: String,
    pub dest: String,
    pub name: Option<String>,
    pub port: u16,
    pub protocol: &'static str,
}

/// A stored bytes row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    pub what: Bytes,
    pub sent: u64,
    pub received: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// One exec as seen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Exec {
    pub identity: String,
    pub file: String,
    pub sha256: Option<String>,
    pub verdict: &'static str,
}

/// A stored row with its count and times (milliseconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen<T> {
    pub what: T,
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// How much the store keeps.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub retention_ms: i64,
    /// Rows per identity and table: one identity never pushes out another's.
    pub max_rows: u64,
}

pub struct Store {
    db: Connection,
}

// Empty strings stand for "none" in the keys: SQLite's UNIQUE treats NULLs as distinct.
fn or_empty(s: Option<&str>) -> &str {
    s.unwrap_or("")
}

fn none_if_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn protocol_of(s: &str) -> &'static str {
    if s == "udp" { "udp" } else { "tcp" }
}

fn verdict_of(s: &str) -> &'static str {
    match s {
        "allow" => "allow",
        "audit" => "audit",
        _ => "deny",
    }
}

impl Store {
    #[must_use]
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// Open the store in `state_dir`, creating it if needed.
    ///
    /// # Errors
    /// The file cannot be made, is not root's, or the database fails.
    pub fn open(state_dir: &Path) -> Result<Self, ObserveError> {
        let db = crate::sys::db::open_root_only(state_dir, FILE)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS flows (
                 identity TEXT NOT NULL, dest TEXT NOT NULL, name TEXT NOT NULL,
                 port INTEGER NOT NULL, protocol TEXT NOT NULL, binary TEXT NOT NULL,
                 verdict TEXT NOT NULL, count INTEGER NOT NULL,
                 first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
                 UNIQUE (identity, dest, name, port, protocol, binary, verdict));
             CREATE INDEX IF NOT EXISTS flows_last ON flows (last_ms);
             CREATE TABLE IF NOT EXISTS execs (
                 identity TEXT NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL,
                 verdict TEXT NOT NULL, count INTEGER NOT NULL,
                 first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
                 UNIQUE (identity, file, verdict));
             CREATE INDEX IF NOT EXISTS execs_last ON execs (last_ms);
             CREATE TABLE IF NOT EXISTS traffic (
                 identity TEXT NOT NULL, dest TEXT NOT NULL, name TEXT NOT NULL,
                 port INTEGER NOT NULL, protocol TEXT NOT NULL,
                 sent INTEGER NOT NULL, received INTEGER NOT NULL,
                 first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
                 UNIQUE (identity, dest, name, port, protocol));
             CREATE INDEX IF NOT EXISTS traffic_last ON traffic (last_ms);",
        )?;
        Ok(Self { db })
    }

    /// Add what was seen, each key with how many times, at `now_ms`, in one
    /// transaction.
    ///
    /// # Errors
    /// The database fails.
    pub fn record(
        &mut self,
        flows: &[(Flow, u64)],
        execs: &[(Exec, u64)],
        now_ms: i64,
    ) -> Result<(), ObserveError> {
        let tx = self.db.transaction()?;
        {
            let mut f = tx.prepare_cached(
                "INSERT INTO flows (identity, dest, name, port, protocol, binary, verdict, count, first_ms, last_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?8, ?8)
                 ON CONFLICT DO UPDATE SET count = count + excluded.count, last_ms = excluded.last_ms",
            )?;
            for (x, n) in flows {
                f.execute(params![
                    x.identity,
                    x.dest,
                    or_empty(x.name.as_deref()),
                    x.port,
                    x.protocol,
                    or_empty(x.binary.as_deref()),
                    x.verdict,
                    now_ms,
                    i64::try_from(*n).unwrap_or(i64::MAX)
                ])?;
            }
            let mut e = tx.prepare_cached(
                "INSERT INTO execs (identity, file, sha256, verdict, count, first_ms, last_ms)
                 VALUES (?1, ?2, ?3, ?4, ?6, ?5, ?5)
                 ON CONFLICT DO UPDATE SET count = count + excluded.count, last_ms = excluded.last_ms,
                     sha256 = CASE excluded.sha256 WHEN '' THEN sha256 ELSE excluded.sha256 END",
            )?;
            for (x, n) in execs {
                e.execute(params![
                    x.identity,
                    x.file,
                    or_empty(x.sha256.as_deref()),
                    x.verdict,
                    now_ms,
                    i64::try_from(*n).unwrap_or(i64::MAX)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Add bytes sent and received per peer, at `now_ms`, in one transaction.
    ///
    /// # Errors
    /// The database fails.
    pub fn record_bytes(
        &mut self,
        moved: &[(Bytes, u64, u64)],
        now_ms: i64,
    ) -> Result<(), ObserveError> {
        let tx = self.db.transaction()?;
        {
            let mut q = tx.prepare_cached(
                "INSERT INTO traffic (identity, dest, name, port, protocol, sent, received, first_ms, last_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT DO UPDATE SET sent = sent + excluded.sent,
                     received = received + excluded.received, last_ms = excluded.last_ms",
            )?;
            for (x, sent, received) in moved {
                q.execute(params![
                    x.identity,
                    x.dest,
                    or_empty(x.name.as_deref()),
                    x.port,
                    x.protocol,
                    i64::try_from(*sent).unwrap_or(i64::MAX),
                    i64::try_from(*received).unwrap_or(i64::MAX),
                    now_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Bytes of `identity` per peer last seen at or after `since_ms`, most sent first.
    ///
    /// # Errors
    /// The database fails.
    pub fn bytes(&self, identity: &str, since_ms: i64) -> Result<Vec<Moved>, ObserveError> {
        let mut q = self.db.prepare(
            "SELECT dest, name, port, protocol, sent, received, first_ms, last_ms FROM traffic
             WHERE identity = ?1 AND last_ms >= ?2 ORDER BY sent DESC, received DESC, dest, port",
        )?;
        let rows = q.query_map(params![identity, since_ms], |r| {
            Ok(Moved {
                what: Bytes {
                    identity: identity.to_owned(),
                    dest: r.get(0)?,
                    name: none_if_empty(r.get(1)?),
                    port: r.get(2)?,
                    protocol: protocol_of(&r.get::<_, String>(3)?),
                },
                sent: r.get::<_, i64>(4)?.unsigned_abs(),
                received: r.get::<_, i64>(5)?.unsigned_abs(),
                first_ms: r.get(6)?,
                last_ms: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drop rows past the retention, then each identity's least recently seen past the
    /// row cap.
    /// Returns how many rows went: (flows and traffic, execs).
    ///
    /// # Errors
    /// The database fails.
    pub fn prune(&mut self, bounds: Bounds, now_ms: i64) -> Result<(usize, usize), ObserveError> {
        let cutoff = now_ms.saturating_sub(bounds.retention_ms);
        let keep = i64::try_from(bounds.max_rows).unwrap_or(i64::MAX);
        let tx = self.db.transaction()?;
        let mut gone = [0usize; 2];
        for (i, table) in [(0, "flows"), (1, "execs"), (0, "traffic")] {
            gone[i] += tx.execute(&format!("DELETE FROM {table} WHERE last_ms < ?1"), [cutoff])?;
            gone[i] += tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM (
                         SELECT rowid, row_number() OVER (
                             PARTITION BY identity ORDER BY last_ms DESC) AS n
                         FROM {table}) WHERE n > ?1)"
                ),
                [keep],
            )?;
        }
        tx.commit()?;
        Ok((gone[0], gone[1]))
    }

    /// Rows in each table: (flows, execs).
    ///
    /// # Errors
    /// The database fails.
    pub fn rows(&self) -> Result<(u64, u64), ObserveError> {
        let n = |t: &str| {
            self.db
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n.unsigned_abs())
        };
        Ok((n("flows")?, n("execs")?))
    }

    /// The flows of `identity` last seen at or after `since_ms`, most used first.
    ///
    /// # Errors
    /// The database fails.
    pub fn flows(&self, identity: &str, since_ms: i64) -> Result<Vec<Seen<Flow>>, ObserveError> {
        let mut q = self.db.prepare(
            "SELECT dest, name, port, protocol, binary, verdict, count, first_ms, last_ms FROM flows
             WHERE identity = ?1 AND last_ms >= ?2 ORDER BY count DESC, dest, port",
        )?;
        let rows = q.query_map(params![identity, since_ms], |r| {
            Ok(Seen {
                what: Flow {
                    identity: identity.to_owned(),
                    dest: r.get(0)?,
                    name: none_if_empty(r.get(1)?),
                    port: r.get(2)?,
                    protocol: protocol_of(&r.get::<_, String>(3)?),
                    binary: none_if_empty(r.get(4)?),
                    verdict: verdict_of(&r.get::<_, String>(5)?),
                },
                count: r.get::<_, i64>(6)?.unsigned_abs(),
                first_ms: r.get(7)?,
                last_ms: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The execs of `identity` last seen at or after `since_ms`, most used first.
    ///
    /// # Errors
    /// The database fails.
    pub fn execs(&self, identity: &str, since_ms: i64) -> Result<Vec<Seen<Exec>>, ObserveError> {
        let mut q = self.db.prepare(
            "SELECT file, sha256, verdict, count, first_ms, last_ms FROM execs
             WHERE identity = ?1 AND last_ms >= ?2 ORDER BY count DESC, file",
        )?;
        let rows = q.query_map(params![identity, since_ms], |r| {
            Ok(Seen {
                what: Exec {
                    identity: identity.to_owned(),
                    file: r.get(0)?,
                    sha256: none_if_empty(r.get(1)?),
                    verdict: verdict_of(&r.get::<_, String>(2)?),
                },
                count: r.get::<_, i64>(3)?.unsigned_abs(),
                first_ms: r.get(4)?,
                last_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(i: u32) -> Flow {
        Flow {
            identity: "agent".into(),
            dest: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            name: None,
            port: 443,
            protocol: "tcp",
            binary: Some("/usr/bin/curl".into()),
            verdict: "audit",
        }
    }

    fn store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "zt-observe-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        (Store::open(&dir).expect("open"), dir)
    }

    #[test]
    fn counts_add_up_per_key_and_names_and_binaries_keep_apart() {
        let (mut s, dir) = store();
        let named = Flow {
            name: Some("api.example.test".into()),
            ..flow(1)
        };
        s.record(&[(flow(1), 2), (named.clone(), 1)], &[], 1_000)
            .expect("record");
        s.record(&[(flow(1), 1)], &[], 2_000).expect("record");
        let rows = s.flows("agent", 0).expect("flows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].what, flow(1));
        assert_eq!(
            (rows[0].count, rows[0].first_ms, rows[0].last_ms),
            (3, 1_000, 2_000)
        );
        assert_eq!(rows[1].what, named);
        assert!(s.flows("agent", 1_500).expect("since").len() == 1);
        assert!(s.flows("other", 0).expect("other").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_million_flows_stay_within_the_bound() {
        let (mut s, dir) = store();
        let bounds = Bounds {
            retention_ms: 30 * 86_400_000,
            max_rows: 10_000,
        };
        for batch in 0..100u32 {
            let flows: Vec<(Flow, u64)> =
                (0..10_000).map(|i| (flow(batch * 10_000 + i), 1)).collect();
            s.record(&flows, &[], i64::from(batch)).expect("record");
            s.prune(bounds, i64::from(batch)).expect("prune");
            assert!(s.rows().expect("rows").0 <= bounds.max_rows);
        }
        // The most recently seen are the ones kept.
        let kept = s.flows("agent", 0).expect("flows");
        assert_eq!(kept.len(), 10_000);
        assert!(kept.iter().all(|f| f.last_ms == 99));
        // Past the retention everything goes.
        s.prune(
            Bounds {
                retention_ms: 10,
                ..bounds
            },
            200,
        )
        .expect("prune");
        assert_eq!(s.rows().expect("rows"), (0, 0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn one_identity_past_its_rows_never_pushes_out_anothers() {
        let (mut s, dir) = store();
        let bounds = Bounds {
            retention_ms: 30 * 86_400_000,
            max_rows: 100,
        };
        let calm = Flow {
            identity: "calm".into(),
            ..flow(7)
        };
        s.record(&[(calm.clone(), 1)], &[], 1).expect("record");
        // Later, and far more: the flooder's own oldest go, the calm one's row stays.
        let flood: Vec<(Flow, u64)> = (0..1_000).map(|i| (flow(i), 1)).collect();
        s.record(&flood, &[], 2).expect("record");
        s.prune(bounds, 3).expect("prune");
        assert_eq!(s.flows("agent", 0).expect("flows").len(), 100);
        assert_eq!(s.flows("calm", 0).expect("calm")[0].what, calm);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn execs_keep_their_digest() {
        let (mut s, dir) = store();
        let e = Exec {
            identity: "agent".into(),
            file: "/usr/bin/git".into(),
            sha256: Some("ab".repeat(32)),
            verdict: "audit",
        };
        s.record(&[], &[(e.clone(), 2)], 5).expect("record");
        // A record held back by the event budgets comes without its digest.
        let bare = Exec {
            sha256: None,
            ..e.clone()
        };
        s.record(&[], &[(bare, 1)], 6).expect("record");
        let rows = s.execs("agent", 0).expect("execs");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].what.clone(), rows[0].count), (e, 3));
        let _ = std::fs::remove_dir_all(dir);
    }
}
