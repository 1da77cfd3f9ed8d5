//! Putting the daemon together: the bus and its subscribers, the resolver, the
//! enforcer, the first policy, the programs attached (on a fresh start), the metrics
//! address and the state file. What comes out is ready to be spawned as parts.

use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use zt_agent_common::map_names;

use super::DaemonError;
use super::boot::Booted;
use super::enforcer::{self, Enforcer};
use super::event_pump::Pump;
use super::reconciler::{self, Reconciler};
use crate::bus::{self, Bus};
use crate::cli::DaemonArgs;
use crate::dns::server::{DnsEvents, Resolver, Serving};
use crate::ebpf::loader::{self, ExecGuard, KernelMaps};
use crate::ebpf::maps::{Counters, Tasks};
use crate::events::limit::{Budget, Limits};
use crate::events::sink::{Rotation, Sink, SinkPart};
use crate::grants::manager::{self as grant_manager, ControlCall, Inbox, Manager};
use crate::grants::{self, GrantPolicy};
use crate::metrics::Metrics;
use crate::state::State;
use crate::tamper::Guard;
use crate::workload::watch::{Containers, Watcher};

/// The grant manager's queue: denials (for `why` and requests) and grant events.
const GRANTS_BACKLOG: usize = 4096;
/// Ended grants and decided requests are kept this long, for `why` and listings.
const GRANT_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);
/// Events a bus subscriber may have waiting before it starts losing them.
const SINK_BACKLOG: usize = 16_384;

/// Everything the parts run on.
pub struct Started {
    pub metrics: Metrics,
    pub bus: Bus,
    pub sink: SinkPart,
    /// Tasks execs enrolled, for their sockets from before.
    pub enrolled: mpsc::Receiver<(u32, u32)>,
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
    pub guard: Guard,
    pub grants: (Manager, Inbox),
    pub control: (UnixListener, Tasks, mpsc::Sender<ControlCall>),
    /// The SPIFFE Workload API, unless disabled.
    pub workload: Option<crate::spiffe::Workload>,
    /// The container runtimes, followed; and what they report.
    pub watcher: Watcher,
    pub containers: watch::Receiver<Containers>,
    /// Flows and execs into the observation store.
    pub observer: crate::observe::Observer,
    /// Flow bytes read from the kernel, and upload limits.
    pub accountant: crate::traffic::Accountant,
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
        task_shares,
        sockets,
        cgroups,
        policy,
        exec,
        counters,
        traffic,
        shadow: _,
        dns,
        grants: grant_maps,
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
    let grant_events = bus.subscribe("grants", GRANTS_BACKLOG);
    // The observer takes kernel records from the pump; from the bus only the answers
    // that name addresses.
    let observed = bus.subscribe_to("observe", crate::observe::BACKLOG, |b| {
        matches!(b, crate::bus::Body::Dns(_))
    });
    let bus = bus.build();
    // Readers of the task table, besides the enforcer's handle: the manager checks
    // `--pid`, the control socket its peers. All are opened before the state file says
    // the daemon is ready: from then on a removed pin is tamper, not a start-up error.
    let reader = || {
        loader::open_pinned_map(&booted.pins, map_names::TASKS)
            .map(Tasks)
            .map_err(DaemonError::Load)
    };
    let (grant_policy, grant_policy_rx) = watch::channel(Arc::new(GrantPolicy::default()));
    let (resolver, dns_events, dns_serving) =
        super::resolver::start(&args.dns, dns, metrics.dns.clone(), bus.clone())?;
    let (enforcer, enforcer_ended) = Enforcer::spawn(
        enforcer::Maps {
            tasks,
            task_shares,
            sockets,
            cgroups,
            policy,
            exec,
            grants: grant_maps,
        },
        args.task_share,
    )?;
    let (mut reconciler, state) = Reconciler::new(
        args.policy.clone(),
        args.dirs.state_dir.clone(),
        booted.state,
        reconciler::Parts {
            enforcer: enforcer.clone(),
            resolver: resolver.clone(),
            bus: bus.clone(),
            metrics: metrics.policy.clone(),
            grants: grant_policy,
        },
    );
    // The containers already there, before the first policy is put in force.
    let (watcher, mut containers) = Watcher::new(&args.containers.sockets());
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
    // From here on a removed pin detaches nothing, and a detached program comes back.
    let guard = Guard::open(&booted.pins, &booted.cgroup_root)?;
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
    // The grant manager and the control socket are ready before the state file says
    // the daemon is.
    let (mut manager, mut inbox, handle) = Manager::new(
        &args.dirs.state_dir,
        grant_manager::Parts {
            settings: grants::Settings {
                ask_timeout: args.grants.ask_timeout.into(),
                ask_hold: args.grants.ask_hold.into(),
                webhook: args.grants.approval_webhook.clone(),
                retention: GRANT_RETENTION,
                cgroup_root: booted.cgroup_root.clone(),
            },
            enforcer: enforcer.clone(),
            tasks: reader()?,
            bus: bus.clone(),
            events: grant_events,
            policy: grant_policy_rx,
            metrics: metrics.grants.clone(),
        },
    )?;
    manager.prepare(&mut inbox).await;
    resolver.set_grants(handle.clone());
    let control =
        super::control::bind(&args.dirs.state_dir).map_err(|source| DaemonError::Control {
            path: super::control::socket_path(&args.dirs.state_dir)
                .display()
                .to_string(),
            source,
        })?;
    let control_tasks = reader()?;
    let workload = workload_api(args, &booted.pins, &state, &bus, &metrics)?;
    let st = reconciler.state_mut();
    st.workload_api = workload.as_ref().map(|w| w.socket.clone());
    st.exec_guard = Some(exec_guard.as_str().to_owned());
    st.metrics_addr = listener.local_addr().ok().map(|a| a.to_string());
    st.daemon_pid = Some(std::process::id());
    st.dns_port = Some(resolver.port());
    reconciler.write_state()?;
    let (raw_tx, raw_observed) = mpsc::channel(crate::observe::RAW_BACKLOG);
    let (moved_tx, moved) = mpsc::channel(crate::traffic::MOVED_BACKLOG);
    let accountant = crate::traffic::Accountant::new(
        traffic,
        state.clone(),
        bus.clone(),
        metrics.traffic.clone(),
        moved_tx,
    );
    let observer = crate::observe::Observer::new(
        crate::observe::Store::open(&args.dirs.state_dir).map_err(DaemonError::Observe)?,
        observed,
        raw_observed,
        moved,
        state.clone(),
        crate::observe::Bounds {
            retention_ms: i64::try_from(
                std::time::Duration::from(args.observe.retention).as_millis(),
            )
            .unwrap_or(i64::MAX),
            max_rows: args.observe.flow_rows,
        },
        metrics.observe.clone(),
    );
    let mut sink = sink;
    sink.resume_chain(&args.dirs.state_dir);
    let sink = SinkPart {
        sink,
        events: sink_events,
        state: state.clone(),
        metrics: metrics.events.clone(),
        limits,
        hup: signal(SignalKind::hangup())?,
    };
    let (enrolled_tx, enrolled) = mpsc::channel(super::sockets::BACKLOG);
    let pump = Pump::new(events, metrics.events.clone())?
        .with_enrolled(enrolled_tx)
        .with_observer(
            raw_tx,
            metrics.observe.dropped.with_label_values(&["queue_full"]),
        );
    Ok(Started {
        metrics,
        bus,
        sink,
        enrolled,
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
        guard,
        grants: (manager, inbox),
        control: (control, control_tasks, handle.control),
        workload,
        watcher,
        containers,
        observer,
        accountant,
    })
}

fn workload_api(
    args: &DaemonArgs,
    pins: &crate::ebpf::loader::PinDir,
    state: &watch::Receiver<Arc<State>>,
    bus: &Bus,
    metrics: &Metrics,
) -> Result<Option<crate::spiffe::Workload>, DaemonError> {
    let w = &args.workload;
    if w.disabled {
        return Ok(None);
    }
    let cfg = crate::spiffe::Config {
        socket: w.socket.clone(),
        state_dir: args.dirs.state_dir.clone(),
        operator_ca: w.svid_ca_cert.clone().zip(w.svid_ca_key.clone()),
        x509_ttl: w.x509_svid_ttl,
        jwt_ttl: w.jwt_svid_ttl,
    };
    Ok(Some(crate::spiffe::start(
        &cfg,
        pins,
        state.clone(),
        bus.clone(),
        metrics.spiffe.clone(),
    )?))
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
