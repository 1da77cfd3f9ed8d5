//! Command line. Its commands and flags are a contract users and scripts rely on
//! (documented in the README): extend it compatibly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    Daemon(Box<DaemonArgs>),
    /// Run CMD under an identity, in a fresh cgroup, without privileges.
    Run(RunArgs),
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// List enrolled tasks with their identity, and shadow workloads: unenrolled tasks
    /// that made egress connections since the agent started.
    Ps(PsArgs),
    /// Show an identity's latest SVIDs (their public parts) and the trust bundles
    /// (root only).
    Svid(SvidArgs),
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
    /// Give an identity (or one of its runs or tasks) access for a while; prints the
    /// grant's id.
    Grant(GrantArgs),
    /// Per identity: its rules, what it did (flows, execs, denials) and the grants given
    /// to it, over a period.
    Review(ReviewArgs),
    /// List grants, in force and recently ended.
    Grants {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// End a grant now, or every grant of an identity.
    Revoke(RevokeArgs),
    /// List requests raised by `ask` rules.
    Requests {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Approve a request: a grant for its task, for `--for` or the rule's maxGrant.
    Approve {
        /// The request's id (`zt-agent requests`).
        id: String,
        /// How long the grant lasts (at most the rule's maxGrant), e.g. 10m.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Deny a request.
    Deny {
        /// The request's id (`zt-agent requests`).
        id: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// The latest denials of a task or an identity, with their cause and the command
    /// that would request or give access.
    Why(WhyArgs),
    /// The audit trail of event files.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Identity (metadata.name in the policy).
    pub identity: String,
    /// Destinations as `egress.to` takes them: addresses, CIDRs, DNS names, wildcards.
    #[arg(long, required = true, num_args = 1..)]
    pub to: Vec<String>,
    /// Ports or ranges (`443`, `8000-8100`); all ports when omitted.
    #[arg(long, num_args = 1..)]
    pub ports: Vec<String>,
    /// tcp, udp or any (default any).
    #[arg(long)]
    pub protocol: Option<String>,
    /// How long, e.g. 30m, 12h, 7d (at most the identity's spec.grants.maxDuration).
    #[arg(long = "for")]
    pub duration: String,
    /// Why, for the record.
    #[arg(long)]
    pub reason: String,
    /// Only for the tasks of this `zt-agent run` (the last part of its cgroup
    /// `/zt/IDENTITY/RUN_ID`).
    #[arg(long, conflicts_with = "pid")]
    pub run: Option<String>,
    /// Only for this thread group.
    #[arg(long)]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub dirs: Dirs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "identity"])))]
pub struct RevokeArgs {
    /// The grant's id.
    pub id: Option<String>,
    /// Every grant of this identity.
    #[arg(long)]
    pub identity: Option<String>,
    #[command(flatten)]
    pub dirs: Dirs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("whose").required(true).args(["pid", "identity"])))]
pub struct WhyArgs {
    /// The denials of this thread group.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The denials of this identity.
    #[arg(long)]
    pub identity: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dirs: Dirs,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the `seq`/`chain` trail of event files (in order, when a file was rotated)
    /// and name the first line that breaks it.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// A duration on the command line (`20s`, `10m`, `1h30m`).
#[derive(Clone, Copy, Debug)]
pub struct Dur(pub Duration);

impl From<Dur> for Duration {
    fn from(d: Dur) -> Self {
        d.0
    }
}

fn parse_dur(s: &str) -> Result<Dur, String> {
    crate::policy::parse_duration(s).map(|secs| Dur(Duration::from_secs(secs)))
}

/// Requests raised by `ask` rules.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// How long the resolver holds a lookup of a name under `ask` while a human
    /// decides (it answers once approved, REFUSED on a denial or at the end).
    #[arg(long, default_value = "20s", value_parser = parse_dur)]
    pub ask_hold: Dur,
    /// How long a request waits for a decision before it is recorded `timed_out`.
    #[arg(long, default_value = "10m", value_parser = parse_dur)]
    pub ask_timeout: Dur,
    /// POST every new request as JSON to this URL (http:// or https://).
    #[arg(long)]
    pub approval_webhook: Option<String>,
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
pub struct SvidArgs {
    /// Identity (metadata.name in the policy).
    pub identity: String,
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
    /// Most entries of the kernel's task table (65,536 thread groups) one identity may
    /// hold; a fork past it fails for that identity alone. Lowered when every
    /// identity's share would not fit the table side by side.
    #[arg(long, default_value_t = zt_agent_common::DEFAULT_TASK_SHARE,
          value_parser = clap::value_parser!(u64).range(1..=u64::from(zt_agent_common::TASKS_CAPACITY)))]
    pub task_share: u64,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub grants: AskArgs,
    #[command(flatten)]
    pub observe: ObserveArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub containers: ContainerArgs,
    #[command(flatten)]
    pub dirs: Dirs,
}

/// The observation store (flows and execs of every identity, for learning and review).
#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// How long observations are kept after they were last seen.
    #[arg(long, default_value = "30d", value_parser = parse_dur)]
    pub retention: Dur,
    /// Most rows kept per identity and table (flows, execs); past it that identity's
    /// least recently seen go.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_rows: u64,
}

/// The SPIFFE Workload API enrolled tasks get their SVIDs from.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Unix socket of the SPIFFE Workload API (`zt-agent run` hands it to CMD as
    /// SPIFFE_ENDPOINT_SOCKET).
    #[arg(long = "workload-api", default_value = crate::spiffe::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Do not serve the Workload API.
    #[arg(long = "no-workload-api", conflicts_with = "socket")]
    pub disabled: bool,
    /// CA certificate (PEM) that signs X.509-SVIDs, followed by its issuers up to the
    /// root, which becomes the trust bundle. Default: a CA the daemon makes and
    /// rotates itself, its key root-only in the state dir.
    #[arg(long, requires = "svid_ca_key")]
    pub svid_ca_cert: Option<PathBuf>,
    /// PKCS#8 PEM key of --svid-ca-cert (root's, mode 0600).
    #[arg(long, requires = "svid_ca_cert")]
    pub svid_ca_key: Option<PathBuf>,
    /// Lifetime of X.509-SVIDs (`90s`, `30m`, `1h`); renewed on the stream at half.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub x509_svid_ttl: std::time::Duration,
    /// Lifetime of JWT-SVIDs.
    #[arg(long, default_value = "5m", value_parser = parse_ttl)]
    pub jwt_svid_ttl: std::time::Duration,
}

/// `N`, `Ns`, `Nm`, `Nh` or `Nd`, between 2 s and 7 days.
fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 90s, 30m, 1h)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: unit must be s, m, h or d")),
    };
    let secs = n.saturating_mul(mult);
    if !(2..=7 * 86_400).contains(&secs) {
        return Err(format!("`{s}` is outside 2s..7d"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Where the container runtimes' metadata comes from.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// Docker Engine API socket of a container runtime: Docker's, or Podman's
    /// (`podman system service`); repeat for more. Default: /var/run/docker.sock and
    /// /run/podman/podman.sock, where they exist.
    #[arg(long = "container-socket", value_name = "PATH")]
    pub container_sockets: Vec<PathBuf>,
}

impl ContainerArgs {
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
    /// Most tasks (processes and threads) CMD and its descendants may have at once
    /// (the launch cgroup's pids.max; default 4096); 0 sets no limit. Needs the pids
    /// controller in cgroup v2: without it the default is skipped silently, an explicit
    /// value with a warning.
    #[arg(long)]
    pub pids_max: Option<u64>,
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
    /// The least-privilege policy that would have allowed what IDENTITY did: its
    /// document with rules for the flows and execs the observation store holds that
    /// the policy did not allow (audited), and no `mode: audit`.
    Suggest(SuggestArgs),
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Only this identity (metadata.name in the policy); default: every identity.
    pub identity: Option<String>,
    /// The period reviewed.
    #[arg(long, default_value = "30d", value_parser = parse_dur)]
    pub since: Dur,
    /// Print JSON.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print Markdown (the default).
    #[arg(long)]
    pub markdown: bool,
    /// Directory of policy YAML files.
    #[arg(long, default_value = "/etc/zt-agent/policies")]
    pub policy: PathBuf,
    #[command(flatten)]
    pub dirs: Dirs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuggestFormat {
    /// The whole policy file, changed.
    Yaml,
    /// A unified diff against the file as it is.
    Diff,
}

#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Identity (metadata.name in the policy).
    pub identity: String,
    /// Only what was seen within this long (`30m`, `24h`, `7d`); default: everything kept.
    #[arg(long, value_parser = parse_dur)]
    pub since: Option<Dur>,
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: SuggestFormat,
    /// Also rules for what the policy denied (attempts, not things done).
    #[arg(long)]
    pub denied: bool,
    /// Directory of policy YAML files.
    #[arg(long, default_value = "/etc/zt-agent/policies")]
    pub policy: PathBuf,
    #[command(flatten)]
    pub dirs: Dirs,
}
