//! The containers of the host, kept current: one task per runtime endpoint follows
//! its event stream and lists its containers again on every lifecycle event, and the
//! union is published for the reconciler, which enrolls their cgroups.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::Container;
use super::docker::{DockerError, Engine, EngineInfo};

/// What the watcher publishes: every container of every endpoint reached.
pub type Containers = Arc<Vec<Container>>;

/// How long to wait before trying an endpoint that is not there (yet) again.
const RETRY: Duration = Duration::from_secs(2);

/// Events that change nothing the selectors or cgroups depend on.
fn irrelevant(action: &str) -> bool {
    action.starts_with("exec_")
        || action.starts_with("health_status")
        || matches!(
            action,
            "attach" | "detach" | "top" | "resize" | "commit" | "copy" | "archive-path" | "export"
        )
}

/// The runtime endpoints to follow, and the last listing of each.
pub struct Watcher {
    engines: Vec<Engine>,
    lists: Arc<Mutex<BTreeMap<PathBuf, Vec<Container>>>>,
    tx: watch::Sender<Containers>,
}

impl Watcher {
    #[must_use]
    pub fn new(sockets: &[PathBuf]) -> (Self, watch::Receiver<Containers>) {
        let (tx, rx) = watch::channel(Containers::default());
        (
            Self {
                engines: sockets.iter().map(Engine::new).collect(),
                lists: Arc::default(),
                tx,
            },
            rx,
        )
    }

    /// List every endpoint once (up to `limit`), so that the daemon starts with the
    /// containers that are already there.
    pub async fn list_once(&self, limit: Duration) {
        for e in &self.engines {
            if let Ok(Ok((info, list))) = tokio::time::timeout(limit, listing(e)).await {
                tracing::info!(socket = %e.socket.display(), runtime = %info.runtime, containers = list.len(), "container runtime reached");
                self.store(e, list);
            }
        }
    }

    fn store(&self, e: &Engine, list: Vec<Container>) {
        let all: Vec<Container> = {
            let Ok(mut lists) = self.lists.lock() else {
                return;
            };
            lists.insert(e.socket.clone(), list);
            lists.values().flatten().cloned().collect()
        };
        self.tx.send_if_modified(|cur| {
            if **cur == all {
                false
            } else {
                *cur = Arc::new(all);
                true
            }
        });
    }

    /// Follow every endpoint until the daemon stops.
    pub async fn run(self: Arc<Self>) {
        let mut tasks = tokio::task::JoinSet::new();
        for e in self.engines.clone() {
            let me = self.clone();
            tasks.spawn(async move { me.follow(&e).await });
        }
        while tasks.join_next().await.is_some() {}
        std::future::pending::<()>().await;
    }

    async fn follow(&self, e: &Engine) {
        let mut last_error = String::new();
        loop {
            match self.session(e).await {
                Ok(()) => {
                    tracing::info!(socket = %e.socket.display(), "container runtime closed its event stream")
                }
                Err(err) => {
                    let shown = err.to_string();
                    // Said once while it lasts: an endpoint that is not there is normal.
                    if shown != last_error {
                        tracing::info!(error = %shown, "container runtime not reachable; trying again every {} s", RETRY.as_secs());
                        last_error = shown;
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Subscribe, then list (so nothing is missed in between), then list again on
    /// every lifecycle event.
    async fn session(&self, e: &Engine) -> Result<(), DockerError> {
        let mut events = e.events().await?;
        let (info, list) = listing(e).await?;
        self.store(e, list);
        while let Some(ev) = events.next().await? {
            if irrelevant(&ev.action) {
                continue;
            }
            tracing::debug!(action = %ev.action, id = %ev.id, "container event");
            self.store(e, e.containers(info).await?);
        }
        Ok(())
    }
}

async fn listing(e: &Engine) -> Result<(EngineInfo, Vec<Container>), DockerError> {
    let info = e.info().await?;
    let list = e.containers(info).await?;
    Ok((info, list))
}
