//! The resolver part: enrolled tasks' DNS, bound and pointed at before the programs
//! attach, so that the first redirected query finds it listening (the kernel queues
//! what arrives before its sockets are served).

use std::sync::Arc;
use std::time::Duration;

use super::DaemonError;
use crate::bus::Bus;
use crate::cli::DnsArgs;
use crate::dns::server::{self, DnsEvents, Resolver, Serving};
use crate::ebpf::maps::DnsMaps;
use crate::metrics::DnsMetrics;

pub fn start(
    args: &DnsArgs,
    mut maps: DnsMaps,
    metrics: DnsMetrics,
    bus: Bus,
) -> Result<(Arc<Resolver>, DnsEvents, Serving), DaemonError> {
    let listeners = server::bind(args.dns_port)?;
    let port = listeners.port;
    let mut upstreams = if args.dns_upstreams.is_empty() {
        server::host_upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        args.dns_upstreams.clone()
    };
    // The resolver itself is no upstream: a query would loop.
    upstreams.retain(|u| !(u.ip().is_loopback() && u.port() == port));
    if upstreams.is_empty() {
        tracing::warn!(
            "no upstream DNS resolver (none in /etc/resolv.conf, none given with --dns-upstream): enrolled tasks' allowed names get SERVFAIL"
        );
    }
    tracing::info!(
        port,
        upstreams = ?upstreams,
        max_ttl = args.dns_max_ttl,
        "DNS resolver for enrolled tasks on 127.0.0.1 and ::1"
    );
    let settings = server::Settings {
        port,
        upstreams,
        max_ttl: args.dns_max_ttl,
        grace: Duration::from_secs(args.dns_grace),
        per_identity: args.dns_max_addresses,
        cache_entries: args.dns_cache_entries,
        timeout: Duration::from_secs(2),
    };
    maps.set_port(port).map_err(DaemonError::Install)?;
    let DnsMaps {
        config: _,
        clients,
        allow,
    } = maps;
    let (resolver, events) = Resolver::new(settings, allow, clients, metrics, bus);
    let serving = Resolver::serve(listeners)?;
    Ok((Arc::new(resolver), events, serving))
}
