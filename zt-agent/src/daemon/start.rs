//! Putting the daemon together: the bus and its subscribers, the resolver, the
//! enforcer, the first policy, the programs attached (on a fresh start), the metrics
//! address and the state file. What comes out is ready to be spawned as parts.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

use super::DaemonError;
use super::boot::Booted;
use super::enforcer::{self, Enforcer};
use super::event_pump::Pump;
use super::reconciler::{self, Reconciler};
use crate::bus::{self, Bus};
use crate::cli::DaemonArgs;
use crate::dns::server::{DnsEvents, Resolver, Serving};
use crate::ebpf::loader::{ExecGuard, KernelMaps};
use crate::ebpf::maps::Counters;
use crate::events::limit::{Budget, Limits};
use crate::events::sink::{Rotation, Sink, SinkPart};
use crate::metrics::Metrics;
use crate::state::State;
use crate::workload::watch::{Containers, Watcher};

/// Events a bus subscriber may have waiting before it starts losing them.
const SINK_BACKLOG: usize = 16_384;

/// Everything the parts run on.
pub struct Started {
    pub metrics: Metrics,
    pub bus: Bus,
    pub sink: SinkPart,
    pub state: watch::Receiver<Arc<State>>,
    pub pump: Pump,
    pub counters: Counters,
    pub enforcer: Enforcer,
    pub enforcer_ended: oneshot::Receiver<()>,
    pub resolver: Arc<Resolver>,
    pub dns_events: DnsEvents,
    pub dns_serving: Serving,
    pub reconciler: Reconciler,
    pub listener: Arc<TcpListener>,
    /// The container runtimes, followed; and what they report.
    pub watcher: Watcher,
    pub containers: watch::Receiver<Containers>,
}

pub async fn start(
    args: &DaemonArgs,
    booted: Booted,
    sink: Sink,
    metrics: Metrics,
) -> Result<Started, DaemonError> {
    let adopted = booted.adopted();
    let KernelMaps {
        tasks,
        cgroups,
        policy,
        exec,
        counters,
        shadow: _,
        dns,
        events,
    } = booted.maps;
    let limits = Limits::new(
        Budget {
            per_second: f64::from(args.events_rate),
            burst: f64::from(args.events_burst),
        },
        metrics.events.suppressed.clone(),
    );
    let mut bus = bus::Builder::new(&metrics.events, limits.clone());
    let sink_events = bus.subscribe("sink", SINK_BACKLOG);
    let bus = bus.build();
    let (resolver, dns_events, dns_serving) =
        super::resolver::start(&args.dns, dns, metrics.dns.clone(), bus.clone())?;
    let (enforcer, enforcer_ended) = Enforcer::spawn(enforcer::Maps {
        tasks,
        cgroups,
        policy,
        exec,
    })?;
    let (mut reconciler, state) = Reconciler::new(
        args.policy.clone(),
        args.dirs.state_dir.clone(),
        booted.state,
        reconciler::Parts {
            enforcer: enforcer.clone(),
            resolver: resolver.clone(),
            bus: bus.clone(),
            metrics: metrics.policy.clone(),
        },
    );
    // The containers already there, before the first policy is put in force.
    let (watcher, mut containers) = Watcher::new(&args.workloads.sockets());
    watcher.list_once(std::time::Duration::from_secs(2)).await;
    reconciler.set_containers(containers.borrow_and_update().clone());
    reconciler.start(booted.policy, adopted).await?;
    if let Some(loaded) = booted.loaded {
        // Attach only once the policy is installed, so enrolled tasks see it from
        // their first call.
        loaded.attach(&booted.cgroup_root)?;
        // Tasks that entered a selected cgroup before cgroup_attach_task was hooked,
        // then tasks selected by binary or user that were running first.
        reconciler.sync_cgroups(false).await;
        reconciler.adopt().await;
    }
    let exec_guard = ExecGuard::of_pins(&booted.pins);
    tracing::info!(
        mechanism = exec_guard.as_str(),
        "exec guard: {}",
        exec_guard.describe()
    );
    metrics
        .policy
        .exec_guard
        .with_label_values(&[exec_guard.as_str()])
        .set(1);
    let listener = TcpListener::bind(args.metrics_addr).await.map_err(|e| {
        DaemonError::Io(std::io::Error::new(
            e.kind(),
            format!("metrics address {}: {e}", args.metrics_addr),
        ))
    })?;
    let st = reconciler.state_mut();
    st.exec_guard = Some(exec_guard.as_str().to_owned());
    st.metrics_addr = listener.local_addr().ok().map(|a| a.to_string());
    st.daemon_pid = Some(std::process::id());
    st.dns_port = Some(resolver.port());
    reconciler.write_state()?;
    let sink = SinkPart {
        sink,
        events: sink_events,
        state: state.clone(),
        metrics: metrics.events.clone(),
        limits,
        hup: signal(SignalKind::hangup())?,
    };
    let pump = Pump::new(events, metrics.events.clone())?;
    Ok(Started {
        metrics,
        bus,
        sink,
        state,
        pump,
        counters,
        enforcer,
        enforcer_ended,
        resolver,
        dns_events,
        dns_serving,
        reconciler,
        listener: Arc::new(listener),
        watcher,
        containers,
    })
}

/// The event sink, opened before the programs are attached or the state written: a
/// path the agent will not write is a configuration error, found first.
pub fn open_sink(args: &DaemonArgs) -> Result<Sink, DaemonError> {
    let rotation = Rotation {
        max_bytes: args.events_max_bytes,
        keep: args.events_keep,
    };
    let err = |source| DaemonError::Sink {
        spec: args.events.clone(),
        source,
    };
    let group = args
        .events_group
        .as_deref()
        .map(crate::sys::fs::group_id)
        .transpose()
        .map_err(err)?;
    Sink::open(&args.events, rotation, group).map_err(err)
}
