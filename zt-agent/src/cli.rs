//! Command line. Its commands and flags are a contract users and scripts rely on
//! (documented in the README): extend it compatibly.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ebpf::loader::DEFAULT_PIN_DIR;
use crate::state::DEFAULT_STATE_DIR;

#[derive(Debug, Parser)]
#[command(
    name = "zt-agent",
    version,
    about = "Zero-trust egress and exec enforcement for non-human identities, in the kernel"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the kernel state lives; tests give each daemon its own.
#[derive(Debug, Clone, Args)]
pub struct Dirs {
    /// bpffs directory for pinned programs, links and maps.
    #[arg(long, env = "ZT_AGENT_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Directory for the daemon's state file (identity ids, policy in force).
    #[arg(long, env = "ZT_AGENT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and attach the programs, enforce the policy, serve metrics, stream events.
    Daemon(DaemonArgs),
    /// Run CMD under an identity, in a fresh cgroup, without privileges.
    Run(RunArgs),
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// List enrolled tasks with their identity, and shadow workloads: unenrolled tasks
    /// that made egress connections since the agent started.
    Ps(PsArgs),
    /// Write shell completions (bash, zsh, fish) and the man page into DIR, for
    /// packages: `./x dist` runs it.
    #[command(hide = true)]
    Generate {
        /// Directory to write `completions/` and `man/` into.
        dir: PathBuf,
    },
    /// Show whether the kernel enforces, the policy in force and the exec guard.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dirs: Dirs,
    },
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dirs: Dirs,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Directory of policy YAML files.
    #[arg(long, default_value = "/etc/zt-agent/policies")]
    pub policy: PathBuf,
    /// Address for Prometheus metrics.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Event output: a file path to append JSON lines to, or `-` for stdout.
    #[arg(long, default_value = "-")]
    pub events: String,
    /// Size in bytes at which the event file is rotated (PATH to PATH.1, ...); 0 never.
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    pub events_max_bytes: u64,
    /// Rotated event files kept (PATH.1 ... PATH.N); 0 empties the file instead.
    #[arg(long, default_value_t = 5)]
    pub events_keep: usize,
    /// Events per second written per identity and cause (kind, verdict, reason); past
    /// it they are counted and summed up on a `suppressed` line.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub events_rate: u32,
    /// Events one identity and cause may write at once before the rate applies.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub events_burst: u32,
    /// Group (name or gid) that may read the events file (mode 0640); without it the
    /// file is root's alone (0600).
    #[arg(long)]
    pub events_group: Option<String>,
    /// Detach and remove everything zt-agent pinned, then exit.
    #[arg(long)]
    pub teardown: bool,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub workloads: WorkloadArgs,
    #[command(flatten)]
    pub dirs: Dirs,
}

/// Where the container runtimes' metadata comes from.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Docker Engine API socket of a container runtime: Docker's, or Podman's
    /// (`podman system service`); repeat for more. Default: /var/run/docker.sock and
    /// /run/podman/podman.sock, where they exist.
    #[arg(long = "container-socket", value_name = "PATH")]
    pub container_sockets: Vec<PathBuf>,
}

impl WorkloadArgs {
    /// The sockets to follow: those given, or the runtimes' default ones.
    #[must_use]
    pub fn sockets(&self) -> Vec<PathBuf> {
        if self.container_sockets.is_empty() {
            ["/var/run/docker.sock", "/run/podman/podman.sock"]
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            self.container_sockets.clone()
        }
    }
}

/// The resolver enrolled tasks' DNS goes to.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Port of the agent's resolver on 127.0.0.1 and ::1. Keep it below 1024, so that
    /// only root can listen there while the daemon is down. 0 picks a free one.
    #[arg(long, default_value_t = crate::dns::server::DEFAULT_PORT)]
    pub dns_port: u16,
    /// Upstream resolver (`IP` or `IP:PORT`; repeat for more). Default: the
    /// nameservers of /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_parser = parse_upstream)]
    pub dns_upstreams: Vec<SocketAddr>,
    /// Longest time, in seconds, an answer keeps its addresses open (and the TTL the
    /// task is told, so that its cache agrees).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub dns_max_ttl: u32,
    /// Seconds an answer's addresses stay open past its TTL, for the connect that
    /// follows a lookup.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub dns_grace: u64,
    /// Most addresses DNS may hold open per identity; past it, the one that lapses
    /// first is dropped.
    #[arg(long, default_value_t = 4096)]
    pub dns_max_addresses: usize,
    /// Answers the resolver keeps (per identity and question, for their TTL) so that
    /// repeated lookups skip the upstream round trip; 0 sends every query upstream.
    #[arg(long, default_value_t = 4096)]
    pub dns_cache_entries: usize,
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, zt_agent_common::DNS_PORT))
        .map_err(|_| format!("`{s}` is not an IP address or IP:PORT"))
}

fn parse_env(s: &str) -> Result<String, String> {
    let name = s.split_once('=').map_or(s, |(k, _)| k);
    if name.is_empty() || s.contains('\0') {
        return Err(format!("`{s}` is not NAME or NAME=VALUE"));
    }
    Ok(s.to_owned())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Identity (metadata.name in the policy) to run CMD under.
    #[arg(long)]
    pub identity: String,
    /// User to run CMD as (name or uid). Default: the invoking user, or SUDO_UID under
    /// sudo. Root only when given explicitly as `--user root`.
    #[arg(long)]
    pub user: Option<String>,
    /// Pass a variable to CMD: `NAME` with the caller's value, or `NAME=VALUE`
    /// (repeatable). CMD gets no other variable of the caller's but LANG and TERM;
    /// PATH is /usr/local/bin:/usr/bin:/bin unless given here.
    #[arg(long = "env", value_name = "NAME[=VALUE]", value_parser = parse_env)]
    pub env: Vec<String>,
    #[command(flatten)]
    pub dirs: Dirs,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory without loading anything.
    Check {
        /// Directory of policy YAML files.
        dir: PathBuf,
    },
}
