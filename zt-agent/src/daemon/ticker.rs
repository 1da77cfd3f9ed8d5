//! The ticker: every second, reload a changed policy, enroll new cgroups, follow the
//! files the policy names and let the resolver drop what lapsed; every few seconds,
//! sweep the task table of exited processes; on SIGHUP, reload at once; when the
//! runtimes report a container change, enroll its cgroups at once.

use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio::sync::watch;

use super::reconciler::Reconciler;
use crate::dns::server::Resolver;
use crate::workload::watch::Containers;

/// Ticks between two sweeps of the task table.
const SWEEP_EVERY: u32 = 5;

pub async fn run(
    reconciler: &mut Reconciler,
    resolver: &Resolver,
    hup: &mut Signal,
    containers: &mut watch::Receiver<Containers>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u32;
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
                // With prune: an entry made for a cgroup removed meanwhile (a launch
                // cgroup whose `run` ended during the walk) is gone a second later.
                // Launch cgroups made after the walk are marked, and left alone.
                reconciler.sync_cgroups(true).await;
                reconciler.refresh_files().await;
                resolver.tick();
                n = n.wrapping_add(1);
                if n.is_multiple_of(SWEEP_EVERY) {
                    reconciler.sweep_tasks().await;
                }
            }
        }
    }
}
