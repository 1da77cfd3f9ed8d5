//! The embedded SQLite databases in the state dir (grants, observations): files of
//! root's, mode 0600, never opened through a symbolic link, in WAL mode so that the
//! CLI reads while the daemon writes.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

#[derive(Debug, thiserror::Error)]
pub enum DbFileError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Untrusted { path: String, what: String },
    #[error("{path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
}

/// Create (or check) the database file: a regular file of root's, mode 0600, never
/// through a symbolic link.
fn prepare(path: &Path) -> Result<(), DbFileError> {
    let err = |source| DbFileError::Open {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(err)?;
    let md = f.metadata().map_err(err)?;
    let untrusted = |what: &str| DbFileError::Untrusted {
        path: path.display().to_string(),
        what: what.to_owned(),
    };
    if !md.is_file() {
        return Err(untrusted("not a regular file"));
    }
    if md.uid() != 0 {
        return Err(untrusted("not owned by root"));
    }
    if md.mode() & 0o077 != 0 {
        return Err(untrusted(
            "readable or writable by others than root (want 0600)",
        ));
    }
    Ok(())
}

/// Open `file` in `state_dir`, creating it (and the directory, root only) if needed.
///
/// # Errors
/// The directory or file cannot be made, is not root's, or SQLite refuses it.
pub fn open_root_only(state_dir: &Path, file: &str) -> Result<Connection, DbFileError> {
    let path = state_dir.join(file);
    if !state_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| DbFileError::Open {
                path: state_dir.display().to_string(),
                source,
            })?;
    }
    prepare(&path)?;
    let sql = |source| DbFileError::Sql {
        path: path.display().to_string(),
        source,
    };
    let db = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(sql)?;
    db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .map_err(sql)?;
    Ok(db)
}
