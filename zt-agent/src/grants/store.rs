//! Grants, requests and decisions in an embedded SQLite database in the state dir
//! (`grants.db`, root only), so that they outlive the daemon: a restarted or adopting
//! daemon reads them back and puts what is still in force into the kernel again.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::model::{Grant, Request};

const FILE: &str = "grants.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("grant store {0}")]
    File(#[from] crate::sys::db::DbFileError),
    #[error("grant store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("grant store: a record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

pub struct Store {
    db: Connection,
}

impl Store {
    #[must_use]
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// Open the store in `state_dir`, creating it (and the directory, root only) if
    /// needed.
    ///
    /// # Errors
    /// The directory or file cannot be made, is not root's, or the database fails.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let db = crate::sys::db::open_root_only(state_dir, FILE)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS grants (
                 id TEXT PRIMARY KEY, identity TEXT NOT NULL, state TEXT NOT NULL,
                 expires_ms INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS requests (
                 id TEXT PRIMARY KEY, identity TEXT NOT NULL, state TEXT NOT NULL,
                 created_ms INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS decisions (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL,
                 action TEXT NOT NULL, grant_id TEXT, request_id TEXT,
                 who TEXT NOT NULL, reason TEXT NOT NULL);",
        )?;
        Ok(Self { db })
    }

    pub fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR REPLACE INTO grants (id, identity, state, expires_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![g.id, g.identity, g.state.as_str(), g.expires_ms, serde_json::to_string(g)?],
        )?;
        Ok(())
    }

    pub fn put_request(&self, r: &Request) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR REPLACE INTO requests (id, identity, state, created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![r.id, r.identity, r.state.as_str(), r.created_ms, serde_json::to_string(r)?],
        )?;
        Ok(())
    }

    /// Record a decision or a change: who did what to which grant or request, and why.
    pub fn log(
        &self,
        action: &str,
        grant: Option<&str>,
        request: Option<&str>,
        who: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO decisions (time_ms, action, grant_id, request_id, who, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![super::model::now_ms(), action, grant, request, who, reason],
        )?;
        Ok(())
    }

    pub fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        let mut st = self
            .db
            .prepare("SELECT body FROM grants ORDER BY expires_ms")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }

    pub fn requests(&self) -> Result<Vec<Request>, StoreError> {
        let mut st = self
            .db
            .prepare("SELECT body FROM requests ORDER BY created_ms")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }

    /// Decisions recorded, oldest first: (time ms, action, grant, request, who, reason).
    pub fn decisions(&self) -> Result<Vec<Decision>, StoreError> {
        let mut st = self.db.prepare(
            "SELECT time_ms, action, grant_id, request_id, who, reason FROM decisions ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Decision {
                time_ms: r.get(0)?,
                action: r.get(1)?,
                grant: r.get(2)?,
                request: r.get(3)?,
                who: r.get(4)?,
                reason: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drop grants that ended, requests decided, and decisions recorded, before `ms`.
    pub fn clean(&self, before_ms: i64) -> Result<usize, StoreError> {
        let g = self.db.execute(
            "DELETE FROM grants WHERE state != 'active' AND expires_ms < ?1",
            params![before_ms],
        )?;
        let r = self.db.execute(
            "DELETE FROM requests WHERE state != 'pending' AND created_ms < ?1",
            params![before_ms],
        )?;
        let d = self.db.execute(
            "DELETE FROM decisions WHERE time_ms < ?1",
            params![before_ms],
        )?;
        Ok(g + r + d)
    }
}

/// One recorded decision or change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub time_ms: i64,
    pub action: String,
    pub grant: Option<String>,
    pub request: Option<String>,
    pub who: String,
    pub reason: String,
}
