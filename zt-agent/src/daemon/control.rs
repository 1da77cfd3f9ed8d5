//! The control socket: `control.sock` in the state dir, root's, mode 0600, where the
//! grant commands talk to the daemon. Every peer is checked by its credentials
//! (SO_PEERCRED): uid 0 only, and no enrolled task, whatever its uid. One framed JSON
//! request and one answer per connection, bounded in size and time, with a cap on
//! connections open at once, so a local user hammering it cannot hurt the daemon.

use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ebpf::maps::Tasks;
use crate::grants::control::{ErrorKind, MAX_FRAME, Request, Response, SOCKET};
use crate::grants::manager::ControlCall;

/// Connections served at once; more are closed at once.
const CONNECTIONS: usize = 16;
/// A peer that does not send its whole request in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The answer must be there within this.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[must_use]
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Bind the socket, replacing a stale one (never anything else, never through a link).
///
/// # Errors
/// Something other than a socket is in the way, or binding fails.
pub fn bind(state_dir: &Path) -> io::Result<UnixListener> {
    let path = socket_path(state_dir);
    match std::fs::symlink_metadata(&path) {
        Ok(md) if md.file_type().is_socket() => std::fs::remove_file(&path)?,
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} exists and is not a socket; remove it",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Who a peer is, or why it may not use the socket.
fn admit(stream: &UnixStream, tasks: &Tasks) -> Result<String, String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("peer credentials: {e}"))?;
    if cred.uid() != 0 {
        return Err(format!(
            "only root may use the control socket (peer uid {})",
            cred.uid()
        ));
    }
    let Some(pid) = cred.pid().and_then(|p| u32::try_from(p).ok()) else {
        return Err("the peer's pid is unknown".into());
    };
    if let Some(t) = tasks.get(pid) {
        return Err(format!(
            "an enrolled task (pid {pid}, identity id {}) may not use the control socket",
            t.identity
        ));
    }
    let comm = zt_agent_host::proc::comm(pid).unwrap_or_default();
    let sudo = std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .and_then(|env| {
            env.split(|b| *b == 0)
                .find_map(|v| v.strip_prefix(b"SUDO_USER="))
                .map(|u| String::from_utf8_lossy(u).into_owned())
        });
    Ok(match sudo {
        Some(u) => format!("root via sudo by {u} (pid {pid}, {comm})"),
        None => format!("root (pid {pid}, {comm})"),
    })
}

async fn read_request(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(io::Error::other("frame too large"));
    }
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn answer(stream: &mut UnixStream, r: &Response) -> io::Result<()> {
    let body = serde_json::to_vec(r).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    crate::grants::control::write_frame(&mut out, &body)?;
    stream.write_all(&out).await?;
    stream.shutdown().await
}

async fn serve_one(mut stream: UnixStream, tasks: Arc<Tasks>, manager: mpsc::Sender<ControlCall>) {
    // The whole request first, from everyone: a peer that is answered before it has
    // written could lose the answer to a reset when the socket closes.
    let Ok(Ok(bytes)) = tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await else {
        // A peer that sends nothing, or too much, gets nothing.
        return;
    };
    let response = match admit(&stream, &tasks) {
        Err(why) => {
            tracing::warn!(%why, "control socket: peer refused");
            Response::err(ErrorKind::Refused, why)
        }
        Ok(peer) => match serde_json::from_slice::<Request>(&bytes) {
            Ok(request) => {
                let (reply, rx) = oneshot::channel();
                let call = ControlCall {
                    request,
                    peer,
                    reply,
                };
                if manager.send(call).await.is_err() {
                    Response::err(ErrorKind::Internal, "the grant manager has stopped")
                } else {
                    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
                        Ok(Ok(r)) => r,
                        _ => Response::err(ErrorKind::Internal, "no answer in time"),
                    }
                }
            }
            Err(e) => Response::err(ErrorKind::BadInput, format!("not a request: {e}")),
        },
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, answer(&mut stream, &response)).await;
}

/// Serve until the listener fails for good. Accept errors (out of descriptors) wait a
/// moment instead of ending the part.
pub async fn serve(
    listener: Arc<UnixListener>,
    tasks: Arc<Tasks>,
    manager: mpsc::Sender<ControlCall>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Busy: close at once rather than queue.
            drop(stream);
            continue;
        };
        let (tasks, manager) = (tasks.clone(), manager.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(
                READ_TIMEOUT + ANSWER_TIMEOUT * 2,
                serve_one(stream, tasks, manager),
            )
            .await;
        });
    }
}
