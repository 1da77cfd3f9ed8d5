//! Sockets a task held when an exec enrolled it (by an `exe` or uid/gid selector): for
//! each such task the event pump reports, the enforcer records the task's identity for
//! them. Socket activation hands a service its listeners this way.

use tokio::sync::mpsc;

use super::enforcer::Enforcer;

/// Tasks an exec enrolled, as (tgid, identity), that the adopter may have waiting.
pub const BACKLOG: usize = 4096;

pub async fn run(enrolled: &mut mpsc::Receiver<(u32, u32)>, enforcer: &Enforcer) {
    while let Some((tgid, identity)) = enrolled.recv().await {
        if enforcer.tag_sockets(tgid, identity).await.is_err() {
            return;
        }
    }
}
