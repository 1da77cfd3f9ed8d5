//! The ticker: every second, reload a changed policy, enroll new cgroups, follow the
//! files the policy names and let the resolver drop what lapsed; on SIGHUP, reload at
//! once; when the runtimes report a container change, enroll its cgroups at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio::sync::watch;

use super::reconciler::Reconciler;
use crate::dns::server::Resolver;
use crate::workload::watch::Containers;

pub async fn run(
    mut reconciler: Reconciler,
    resolver: Arc<Resolver>,
    mut hup: Signal,
    mut containers: watch::Receiver<Containers>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = hup.recv() => reconciler.reload(true).await,
            // A container was created, started or removed: enroll (or drop) its cgroup
            // now rather than at the next tick.
            Ok(()) = containers.changed() => {
                let now = containers.borrow_and_update().clone();
                reconciler.set_containers(now);
                reconciler.sync_cgroups(true).await;
            }
            _ = tick.tick() => {
                reconciler.reload(false).await;
                reconciler.sync_cgroups(false).await;
                reconciler.refresh_files().await;
                resolver.tick();
            }
        }
    }
}
