//! The metrics part: serves the registry, and before each scrape folds in the kernel's
//! counters and what the enforcer's maps hold.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus::Registry;
use tokio::sync::watch;
use zt_agent_common::{
    CGROUPS_CAPACITY, DNS_ALLOW_CAPACITY, EXE_SELECTORS_CAPACITY, EXEC_ALLOW_CAPACITY,
    GRANT_TRIE_CAPACITY, IDENTITY_QUARANTINE, POLICY_TRIE_CAPACITY, PRINCIPALS_CAPACITY,
    TASKS_CAPACITY, Verdict, exec_verdict_index,
};

use super::enforcer::Enforcer;
use crate::dns::server::Resolver;
use crate::ebpf::maps::{Counters, sum};
use crate::metrics::KernelMetrics;
use crate::metrics::server::{self, Limits, Refresh};
use crate::policy;
use crate::state::State;

/// What a scrape reads besides the registry.
pub struct Sources {
    pub kernel: KernelMetrics,
    pub counters: Counters,
    pub enforcer: Enforcer,
    pub resolver: Arc<Resolver>,
    pub state: watch::Receiver<Arc<State>>,
    pub traffic: crate::metrics::TrafficMetrics,
    pub last_traffic: BTreeMap<u32, zt_agent_common::Traffic>,
}

/// The hook a scrape runs first: `sources` read into the registry, one scrape at a
/// time.
#[must_use]
pub fn refresh(sources: Sources) -> Refresh {
    let sources = Arc::new(tokio::sync::Mutex::new(sources));
    Arc::new(move || {
        let sources = sources.clone();
        Box::pin(async move { sources.lock().await.refresh().await })
    })
}

/// Serve metrics on `listener`; never returns.
pub async fn serve(
    listener: Arc<tokio::net::TcpListener>,
    registry: Registry,
    refresh: Refresh,
) -> Result<(), String> {
    match server::serve(listener, registry, refresh, Limits::default()).await {}
}

impl Sources {
    async fn refresh(&mut self) {
        self.resolver.update_gauges();
        let state = self.state.borrow().clone();
        let names: BTreeMap<u32, String> = state.ids.iter().map(|(n, i)| (*i, n.clone())).collect();
        let counters = &self.counters;
        self.kernel
            .update_verdicts(&names, |idx| sum(&counters.verdicts, idx));
        self.kernel
            .update_ingress(&names, |idx| sum(&counters.ingress_verdicts, idx));
        self.kernel.update_errors(&counters.errors());
        self.traffic
            .update(&mut self.last_traffic, &names, |id| counters.traffic(id));
        let mut exec_names = names;
        exec_names.insert(IDENTITY_QUARANTINE, policy::QUARANTINE_NAME.to_owned());
        self.kernel.update_exec(&exec_names, |id, v: Verdict| {
            sum(&counters.exec_verdicts, exec_verdict_index(id, v as u8))
        });
        let Ok(stats) = self.enforcer.stats().await else {
            return;
        };
        let refused = |id: u32| {
            sum(&counters.task_refused, id) + stats.refused.get(&id).copied().unwrap_or(0)
        };
        self.kernel.update_tasks(&exec_names, refused, stats.swept);
        let k = &self.kernel;
        k.task_share
            .set(i64::try_from(stats.task_share).unwrap_or(i64::MAX));
        k.identity_tasks.reset();
        for (_, t) in &stats.tasks {
            let name = state.label_of(t.identity);
            k.identity_tasks.with_label_values(&[name.as_str()]).inc();
        }
        for (map, n, cap) in [
            ("tasks", stats.tasks.len(), TASKS_CAPACITY),
            ("cgroups", stats.cgroups, CGROUPS_CAPACITY),
            ("policy_v4", stats.policy_v4, POLICY_TRIE_CAPACITY),
            ("policy_v6", stats.policy_v6, POLICY_TRIE_CAPACITY),
            ("ingress_v4", stats.ingress_v4, POLICY_TRIE_CAPACITY),
            ("ingress_v6", stats.ingress_v6, POLICY_TRIE_CAPACITY),
            ("exe_selectors", stats.exe_selectors, EXE_SELECTORS_CAPACITY),
            ("principals", stats.principals, PRINCIPALS_CAPACITY),
            ("exec_allow", stats.exec_allow, EXEC_ALLOW_CAPACITY),
            ("dns_allow", self.resolver.installed(), DNS_ALLOW_CAPACITY),
            ("grants_v4", stats.grants_v4, GRANT_TRIE_CAPACITY),
            ("grants_v6", stats.grants_v6, GRANT_TRIE_CAPACITY),
        ] {
            k.set_map(map, n, cap);
        }
    }
}
