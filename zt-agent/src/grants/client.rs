//! The commands' side of the control socket: one request, one answer, with timeouts.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::control::{Request, Response, SOCKET, read_frame, write_frame};
use crate::exit;

/// The whole exchange's budget; the daemon answers in milliseconds.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Why no answer came, with the command's exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the daemon is not running: no control socket at {path} ({source})")]
    NotRunning {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("only root may use the control socket {path}")]
    NotRoot { path: String },
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::NotRunning { .. } => exit::UNAVAILABLE,
            Self::NotRoot { .. } => exit::NOPERM,
            Self::Io { .. } => exit::OSERR,
        }
    }
}

/// Send `req` to the daemon of `state_dir` and return its answer.
///
/// # Errors
/// No daemon, no permission, or the exchange failed.
pub fn call(state_dir: &Path, req: &Request) -> Result<Response, ClientError> {
    let path = state_dir.join(SOCKET);
    let shown = path.display().to_string();
    let io = |source| ClientError::Io {
        path: shown.clone(),
        source,
    };
    let mut s = UnixStream::connect(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::NotRoot {
            path: shown.clone(),
        },
        _ => ClientError::NotRunning {
            path: shown.clone(),
            source,
        },
    })?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let body = serde_json::to_vec(req).map_err(|e| io(std::io::Error::other(e)))?;
    write_frame(&mut s, &body).map_err(io)?;
    let back = read_frame(&mut s).map_err(io)?;
    serde_json::from_slice(&back).map_err(|e| io(std::io::Error::other(e)))
}

/// Run one request for a command: print the error and return its exit code, or hand
/// the result to `show`.
pub fn run(
    state_dir: &Path,
    what: &str,
    req: &Request,
    show: impl FnOnce(&serde_json::Value),
) -> u8 {
    match call(state_dir, req) {
        Ok(r) if r.ok => {
            show(&r.result);
            exit::OK
        }
        Ok(r) => {
            eprintln!("zt-agent {what}: {}", r.message);
            r.error
                .map_or(exit::SOFTWARE, super::control::ErrorKind::exit_code)
        }
        Err(e) => {
            eprintln!("zt-agent {what}: {}", exit::chain(&e));
            e.exit_code()
        }
    }
}
