//! Sockets a task held when an exec enrolled it (by an `exe` or uid/gid selector): a
//! bus subscriber that, on each such exec event, has the enforcer record the task's
//! identity for them. Socket activation hands a service its listeners this way.

use std::sync::Arc;

use tokio::sync::mpsc;
use zt_agent_common::{ENROLL_EXE, ENROLL_PRINCIPAL, ENROLL_QUARANTINE, EventKind};

use super::enforcer::Enforcer;
use crate::bus::{self, Body};

pub async fn run(mut events: mpsc::Receiver<Arc<bus::Event>>, enforcer: Enforcer) {
    while let Some(ev) = events.recv().await {
        let Body::Kernel(k) = &ev.body else {
            continue;
        };
        let enrolled_now = k.kind == EventKind::Exec
            && matches!(
                k.raw.detail,
                ENROLL_EXE | ENROLL_PRINCIPAL | ENROLL_QUARANTINE
            );
        if enrolled_now
            && enforcer
                .tag_sockets(k.raw.tgid, k.raw.identity)
                .await
                .is_err()
        {
            return;
        }
    }
}
