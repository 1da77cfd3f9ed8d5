//! The ticker: every second, reload a changed policy, enroll new cgroups, follow the
//! files the policy names and let the resolver drop what lapsed; on SIGHUP, reload at
//! once.

use std::time::Duration;

use tokio::signal::unix::Signal;

use super::reconciler::Reconciler;
use crate::dns::server::Resolver;

pub async fn run(reconciler: &mut Reconciler, resolver: &Resolver, hup: &mut Signal) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = hup.recv() => reconciler.reload(true).await,
            _ = tick.tick() => {
                reconciler.reload(false).await;
                reconciler.sync_cgroups(false).await;
                reconciler.refresh_files().await;
                resolver.tick();
            }
        }
    }
}
