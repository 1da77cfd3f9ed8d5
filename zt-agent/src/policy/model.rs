//! The validated policy: what the parser produces and the compiler consumes.

use std::fmt;

use ipnet::IpNet;
use serde::Serialize;

pub use super::dns_name::{DnsName, valid_label};

/// Trust domain of the SPIFFE ids of identities that do not name their own.
pub const DEFAULT_TRUST_DOMAIN: &str = "zt-agent.local";
/// The only `apiVersion` this version understands.
pub const API_VERSION: &str = "zt-agent/v1";
/// The only `kind` this version understands.
pub const KIND_IDENTITY: &str = "Identity";
/// Metrics label of unenrolled tasks, so no identity may take it as its name.
pub const RESERVED_NAME: &str = "unenrolled";
/// Name of the reserved deny-all identity of tasks that exec'd a selected binary which
/// failed its digest; no identity may take it either.
pub const QUARANTINE_NAME: &str = "quarantine";
/// Parent of the launch cgroups `zt-agent run` creates, below the cgroup2 mount.
pub const LAUNCH_CGROUP_ROOT: &str = "/zt";

/// Where an item was written: file, 1-based line and 1-based column.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// How an identity's policy is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Block what the policy does not allow.
    #[default]
    Enforce,
    /// Never block; report what enforce mode would have blocked.
    Audit,
}

impl Mode {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transport protocol an egress or ingress rule applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Both TCP and UDP.
    #[default]
    Any,
}

impl Protocol {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Any => "any",
        }
    }

    /// Protocol bits as the kernel's port ranges carry them.
    #[must_use]
    pub const fn mask(self) -> u8 {
        match self {
            Self::Tcp => zt_agent_common::PROTO_MASK_TCP,
            Self::Udp => zt_agent_common::PROTO_MASK_UDP,
            Self::Any => zt_agent_common::PROTO_MASK_TCP | zt_agent_common::PROTO_MASK_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `egress.to` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Net(IpNet),
    Name(DnsName),
}

/// All ports: what an omitted `ports` means.
pub const ALL_PORTS: (u16, u16) = (0, u16::MAX);

/// How an egress rule is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Always (inside its windows, for a rule with `when`).
    #[default]
    Allow,
    /// Only through an approved grant: a connect, send or lookup it alone would allow
    /// is refused and raises a request.
    Ask,
}

/// Days of a window, bit 0 Monday .. bit 6 Sunday.
pub type DayMask = u8;
/// Every day of the week.
pub const ALL_DAYS: DayMask = 0x7f;
/// Day names as `when.days` writes them, Monday first.
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One `egress[].when` entry: open on `days`, from `start` to `end` (seconds after
/// local midnight in `timezone`). An `end` at or before `start` ends the next day;
/// `days` name the day a window opens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub days: DayMask,
    pub start: u32,
    /// Up to 86,400 (24:00).
    pub end: u32,
    /// IANA name, or `UTC`.
    pub timezone: String,
    pub location: Location,
}

/// What a `spec.limits` entry caps: the identity's uploads together, or each
/// destination (peer address, port and protocol) on its own.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    Identity,
    Destination,
}

impl LimitScope {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Destination => "destination",
        }
    }
}

/// `spec.limits[]`: at most `upload_bytes` sent in any `per_secs` window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Limit {
    pub upload_bytes: u64,
    pub per_secs: u64,
    pub scope: LimitScope,
}

/// Default of `spec.grants.maxDuration`: one hour.
pub const DEFAULT_MAX_GRANT_SECS: u64 = 3600;
/// The longest `spec.grants.maxDuration` may be: seven days.
pub const MAX_GRANT_CEILING_SECS: u64 = 7 * 86_400;

/// `spec.grants`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GrantSettings {
    /// Ceiling of every grant to the identity, in seconds.
    pub max_duration: u64,
}

impl Default for GrantSettings {
    fn default() -> Self {
        Self {
            max_duration: DEFAULT_MAX_GRANT_SECS,
        }
    }
}

/// One `spec.egress` entry: traffic to any of `to`, on any of `ports`, over `protocol`.
/// `to` is written as one list; it is kept as networks and DNS names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressRule {
    /// Networks, normalised: single addresses are /32 or /128, IPv4-mapped IPv6 is IPv4.
    #[serde(serialize_with = "nets_as_strings")]
    pub to: Vec<IpNet>,
    /// DNS names: the addresses the agent's resolver answers for them, within the
    /// answer's TTL.
    pub names: Vec<DnsName>,
    /// Inclusive port ranges; never empty (an omitted `ports` is [`ALL_PORTS`]).
    pub ports: Vec<(u16, u16)>,
    pub protocol: Protocol,
    /// `allow` (default) or `ask`.
    pub access: Access,
    /// `maxGrant` in seconds: the longest an approval of this `ask` rule may last.
    pub max_grant: Option<u64>,
    /// `when`: the windows the rule is open in; empty means always.
    pub when: Vec<Window>,
    pub location: Location,
}

impl EgressRule {
    /// A rule the kernel's policy tries hold: always open, no approval needed.
    #[must_use]
    pub fn is_static(&self) -> bool {
        self.access == Access::Allow && self.when.is_empty()
    }
}

/// One `spec.ingress` entry: connections and datagrams from any of `from` to the
/// identity's own `ports`, over `protocol`. A listening socket may bind these ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IngressRule {
    /// Peers' networks, normalised as [`EgressRule::to`] is.
    #[serde(serialize_with = "nets_as_strings")]
    pub from: Vec<IpNet>,
    /// The identity's local ports, inclusive ranges; never empty.
    pub ports: Vec<(u16, u16)>,
    pub protocol: Protocol,
    pub location: Location,
}

// ipnet's own serde support is behind a feature the workspace does not enable.
fn nets_as_strings<S: serde::Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(ToString::to_string))
}

/// One `spec.selectors` entry. Only `cgroup` selectors exist in this version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupSelector {
    /// Absolute path glob below the cgroup2 mount.
    pub glob: String,
    pub location: Location,
}

/// The container runtimes a `container` selector can name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Podman,
    Containerd,
    /// Any of them.
    #[default]
    Any,
}

impl Runtime {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Containerd => "containerd",
            Self::Any => "any",
        }
    }

    /// Whether a container of runtime `of` is one this selector names.
    #[must_use]
    pub fn admits(self, of: Self) -> bool {
        self == Self::Any || self == of
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `container` selector: the cgroup of every container whose runtime, name, image
/// and labels all match. Globs are `*` (any run of characters); labels match exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerSelector {
    pub runtime: Runtime,
    /// Glob over the container's name (without Docker's leading `/`).
    pub name: Option<String>,
    /// Glob over the image reference as the runtime reports it (`registry/app:1.2`).
    pub image: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub location: Location,
}

/// A `pod` selector: containers of Kubernetes pods, through the labels the CRI runtime
/// records for them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodSelector {
    /// Glob over the pod's namespace.
    pub namespace: Option<String>,
    /// The pod's labels; all must match exactly.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The container's name in the pod spec; omitted: every container of the pod.
    pub container: Option<String>,
    pub location: Location,
}

/// A `systemdUnit` selector: the unit's cgroup, wherever its slice puts it, and the
/// cgroups below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnitSelector {
    /// `NAME.service` or `NAME.scope`.
    pub unit: String,
    pub location: Location,
}

/// An `exe` selector: a task that execs this file (the same file: the path, a hardlink
/// or any other path to it) while unenrolled takes the identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExeSelector {
    /// Absolute, as written.
    pub path: String,
    /// Lowercase hex sha256 the file must have; a file that differs sends the tasks that
    /// exec it to quarantine.
    pub sha256: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub location: Location,
}

/// A `uid` and/or `gid` selector without `exe`: a task that execs anything while it
/// has this real uid (and gid) takes the identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrincipalSelector {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub location: Location,
}

/// One `spec.exec.allow` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExecPath {
    /// Absolute, as written.
    pub path: String,
    /// Lowercase hex sha256 the file must have to be allowed.
    pub sha256: Option<String>,
    pub location: Location,
}

/// One `kind: Identity` document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub name: String,
    pub owner: String,
    pub description: Option<String>,
    /// As written; [`Identity::spiffe_id`] gives the effective id.
    pub spiffe_id: Option<String>,
    pub mode: Mode,
    /// Explicit selectors only; the launch cgroup is implicit ([`Identity::launch_cgroup_glob`]).
    pub selectors: Vec<CgroupSelector>,
    pub exe_selectors: Vec<ExeSelector>,
    pub principal_selectors: Vec<PrincipalSelector>,
    /// Containers, Kubernetes pods and systemd units: host facts that resolve to cgroups.
    pub container_selectors: Vec<ContainerSelector>,
    pub pod_selectors: Vec<PodSelector>,
    pub unit_selectors: Vec<UnitSelector>,
    /// Empty means deny all.
    pub egress: Vec<EgressRule>,
    /// Empty means no inbound at all: no listening port, no datagram but replies.
    pub ingress: Vec<IngressRule>,
    /// `spec.exec.allow`: `None` means exec is not restricted; empty means no exec.
    pub exec_allow: Option<Vec<ExecPath>>,
    /// `spec.grants`.
    pub grants: GrantSettings,
    /// `spec.limits`.
    pub limits: Vec<Limit>,
    /// Where `metadata.name` was written.
    pub location: Location,
}

impl Identity {
    /// The SPIFFE id, defaulted from the name.
    #[must_use]
    pub fn spiffe_id(&self) -> String {
        self.spiffe_id
            .clone()
            .unwrap_or_else(|| format!("spiffe://{DEFAULT_TRUST_DOMAIN}/{}", self.name))
    }

    /// The glob of the cgroups `zt-agent run --identity NAME` creates.
    #[must_use]
    pub fn launch_cgroup_glob(&self) -> String {
        launch_cgroup_glob(&self.name)
    }

    /// Whether any selector resolves to containers (a `container` or `pod` selector):
    /// its `exec.allow` paths are then resolved inside each of its containers too.
    #[must_use]
    pub fn selects_containers(&self) -> bool {
        !self.container_selectors.is_empty() || !self.pod_selectors.is_empty()
    }

    /// The explicit cgroup selector globs.
    #[must_use]
    pub fn cgroup_globs(&self) -> Vec<String> {
        self.selectors.iter().map(|s| s.glob.clone()).collect()
    }
}

/// The glob of the launch cgroups of identity `name`.
#[must_use]
pub fn launch_cgroup_glob(name: &str) -> String {
    format!("{LAUNCH_CGROUP_ROOT}/{name}/**")
}

/// A whole policy: every identity of every file of a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Sorted by name; names are unique.
    pub identities: Vec<Identity>,
    /// Hex sha256 over the sources (see `hash_sources`).
    pub sha256: String,
    /// The file names the policy was read from, sorted.
    pub sources: Vec<String>,
}

impl Policy {
    #[must_use]
    pub fn identity(&self, name: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.name == name)
    }
}

/// Whether cgroup `path` (absolute, below the cgroup2 mount) matches `glob`: `*` matches
/// within one path component, a `**` component matches zero or more components.
#[must_use]
pub fn cgroup_glob_matches(glob: &str, path: &str) -> bool {
    let g: Vec<&str> = components(glob);
    let p: Vec<&str> = components(path);
    match_components(&g, &p)
}

pub(super) fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

fn match_components(g: &[&str], p: &[&str]) -> bool {
    match g.split_first() {
        None => p.is_empty(),
        Some((&"**", rest)) => (0..=p.len()).any(|skip| match_components(rest, &p[skip..])),
        Some((first, rest)) => match p.split_first() {
            Some((c, prest)) => component_matches(first, c) && match_components(rest, prest),
            None => false,
        },
    }
}

/// Whether `text` matches `glob`, where `*` matches any run of characters (container
/// names, images, pod namespaces).
#[must_use]
pub fn text_glob_matches(glob: &str, text: &str) -> bool {
    component_matches(glob, text)
}

/// `*` within one component, matching any run of characters.
pub(super) fn component_matches(glob: &str, name: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        assert!(cgroup_glob_matches("/zt/coder/**", "/zt/coder/run-1"));
        assert!(cgroup_glob_matches("/zt/coder/**", "/zt/coder/a/b/c"));
        assert!(cgroup_glob_matches("/zt/coder/**", "/zt/coder"));
        assert!(!cgroup_glob_matches("/zt/coder/**", "/zt/coder2/x"));
        assert!(cgroup_glob_matches(
            "/system.slice/tele*.service",
            "/system.slice/telemetry.service"
        ));
        assert!(!cgroup_glob_matches(
            "/system.slice/tele*.service",
            "/system.slice/tele/x.service"
        ));
        assert!(cgroup_glob_matches("/a/*/c", "/a/b/c"));
        assert!(!cgroup_glob_matches("/a/*/c", "/a/b/d/c"));
        assert!(cgroup_glob_matches("/a/**/c", "/a/b/d/c"));
        assert!(cgroup_glob_matches("/a/x*y*z", "/a/xyz"));
        assert!(!cgroup_glob_matches("/a/x*y*z", "/a/xz"));
        assert!(cgroup_glob_matches("/exact", "/exact"));
        assert!(!cgroup_glob_matches("/exact", "/exact/child"));
    }

    #[test]
    fn defaults() {
        let id = Identity {
            name: "coder".into(),
            owner: "a".into(),
            description: None,
            spiffe_id: None,
            mode: Mode::default(),
            selectors: vec![],
            exe_selectors: vec![],
            principal_selectors: vec![],
            container_selectors: vec![],
            pod_selectors: vec![],
            unit_selectors: vec![],
            egress: vec![],
            ingress: vec![],
            exec_allow: None,
            grants: GrantSettings::default(),
            limits: vec![],
            location: Location::default(),
        };
        assert_eq!(id.spiffe_id(), "spiffe://zt-agent.local/coder");
        assert_eq!(id.launch_cgroup_glob(), "/zt/coder/**");
        assert_eq!(id.mode, Mode::Enforce);
        assert_eq!(Protocol::default().mask(), 3);
    }
}
