//! Policies for the tests, built with types rather than indented strings:
//!
//! ```
//! use zt_agent_tests::policy::{Identity, InRule, Rule, Selector};
//! let policy = Identity::new("coder")
//!     .audit()
//!     .selector(Selector::uid(1001))
//!     .exec_allow(["/usr/bin/git"])
//!     .egress(Rule::to(["10.0.0.0/8", "api.example.com"]).ports([443]).tcp())
//!     .ingress(InRule::from(["10.0.0.0/8"]).ports([8080]).tcp())
//!     .and(Identity::new("other").egress(Rule::to(["127.0.0.1"]).port_range(8000, 8100)));
//! assert!(policy.to_string().contains("---\n"));
//! ```
//!
//! Rendered as the YAML that policies/README.md documents. What a builder call leaves
//! out is left out of the YAML too, so the policy's own defaults apply (a rule without
//! `.tcp()`, `.udp()` or `.any()` has no `protocol`, which means any).

use std::fmt::{self, Display, Write as _};

/// The owner every test identity names.
pub const OWNER: &str = "tests@example.com";

/// One identity document.
#[derive(Clone, Debug)]
pub struct Identity {
    name: String,
    mode: &'static str,
    selectors: Vec<Selector>,
    /// `None`: exec not restricted; `Some(vec![])`: no exec at all.
    exec_allow: Option<Vec<ExecEntry>>,
    egress: Vec<Rule>,
    ingress: Vec<InRule>,
    /// `spec.grants.maxDuration`.
    max_grant: Option<String>,
    /// `spec.spiffeId`; `None` leaves the default.
    spiffe_id: Option<String>,
    /// `spec.limits`: (uploadBytes, per, scope).
    limits: Vec<(String, String, String)>,
}

impl Identity {
    /// An identity in enforce mode, owned by [`OWNER`], that may connect nowhere.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            mode: "enforce",
            selectors: Vec::new(),
            exec_allow: None,
            egress: Vec::new(),
            ingress: Vec::new(),
            max_grant: None,
            spiffe_id: None,
            limits: Vec::new(),
        }
    }

    /// One `spec.limits` entry: at most `upload` (`1MiB`) per `per` (`1m`), for
    /// `scope` (`identity` or `destination`).
    #[must_use]
    pub fn limit(mut self, upload: &str, per: &str, scope: &str) -> Self {
        self.limits
            .push((upload.to_owned(), per.to_owned(), scope.to_owned()));
        self
    }

    /// `spec.grants.maxDuration`: the ceiling of every grant to this identity.
    #[must_use]
    pub fn max_grant(mut self, d: impl Into<String>) -> Self {
        self.max_grant = Some(d.into());
        self
    }

    /// The identity's SPIFFE ID (`spec.spiffeId`).
    #[must_use]
    pub fn spiffe_id(mut self, id: impl Into<String>) -> Self {
        self.spiffe_id = Some(id.into());
        self
    }

    /// Audit mode: nothing is blocked, what enforce mode would block is reported.
    #[must_use]
    pub fn audit(mut self) -> Self {
        self.mode = "audit";
        self
    }

    #[must_use]
    pub fn selector(mut self, selector: Selector) -> Self {
        self.selectors.push(selector);
        self
    }

    /// Files the identity may exec, by path. Restricts exec even when given no path.
    #[must_use]
    pub fn exec_allow<S: Into<String>>(mut self, paths: impl IntoIterator<Item = S>) -> Self {
        self.exec_allow
            .get_or_insert_with(Vec::new)
            .extend(paths.into_iter().map(|p| ExecEntry {
                path: p.into(),
                sha256: None,
            }));
        self
    }

    /// A file the identity may exec while it has this digest.
    #[must_use]
    pub fn exec_allow_pinned(mut self, path: impl Into<String>, sha256: impl Into<String>) -> Self {
        self.exec_allow
            .get_or_insert_with(Vec::new)
            .push(ExecEntry {
                path: path.into(),
                sha256: Some(sha256.into()),
            });
        self
    }

    #[must_use]
    pub fn egress(mut self, rule: Rule) -> Self {
        self.egress.push(rule);
        self
    }

    /// An ingress rule: who may connect or send to which of the identity's ports.
    #[must_use]
    pub fn ingress(mut self, rule: InRule) -> Self {
        self.ingress.push(rule);
        self
    }

    /// A policy of this identity and `other`, in that order.
    #[must_use]
    pub fn and(self, other: Identity) -> Policy {
        Policy(vec![self, other])
    }
}

impl Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "apiVersion: zt-agent/v1")?;
        writeln!(f, "kind: Identity")?;
        writeln!(f, "metadata:")?;
        writeln!(f, "  name: {}", quoted(&self.name))?;
        writeln!(f, "  owner: {}", quoted(OWNER))?;
        writeln!(f, "spec:")?;
        writeln!(f, "  mode: {}", self.mode)?;
        if let Some(id) = &self.spiffe_id {
            writeln!(f, "  spiffeId: {}", quoted(id))?;
        }
        if !self.selectors.is_empty() {
            writeln!(f, "  selectors:")?;
            for s in &self.selectors {
                write!(f, "{s}")?;
            }
        }
        if let Some(allow) = &self.exec_allow {
            writeln!(f, "  exec:")?;
            if allow.is_empty() {
                writeln!(f, "    allow: []")?;
            } else {
                writeln!(f, "    allow:")?;
                for e in allow {
                    match &e.sha256 {
                        None => writeln!(f, "      - {}", quoted(&e.path))?,
                        Some(d) => writeln!(
                            f,
                            "      - {{path: {}, sha256: {}}}",
                            quoted(&e.path),
                            quoted(d)
                        )?,
                    }
                }
            }
        }
        if let Some(d) = &self.max_grant {
            writeln!(f, "  grants:")?;
            writeln!(f, "    maxDuration: {}", quoted(d))?;
        }
        if !self.limits.is_empty() {
            writeln!(f, "  limits:")?;
            for (up, per, scope) in &self.limits {
                writeln!(f, "    - {{uploadBytes: {up}, per: {per}, scope: {scope}}}")?;
            }
        }
        if self.egress.is_empty() {
            writeln!(f, "  egress: []")?;
        } else {
            writeln!(f, "  egress:")?;
            for r in &self.egress {
                write!(f, "{r}")?;
            }
        }
        if !self.ingress.is_empty() {
            writeln!(f, "  ingress:")?;
            for r in &self.ingress {
                write!(f, "{r}")?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct ExecEntry {
    path: String,
    sha256: Option<String>,
}

/// Several identity documents in one file.
#[derive(Clone, Debug)]
pub struct Policy(Vec<Identity>);

impl Policy {
    /// This policy with one more identity after the others.
    #[must_use]
    pub fn and(mut self, other: Identity) -> Self {
        self.0.push(other);
        self
    }
}

impl Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f, "---")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// One egress rule: destinations (addresses, CIDRs, DNS names), ports and protocol.
#[derive(Clone, Debug)]
pub struct Rule {
    to: Vec<String>,
    /// Rendered entries: `443` or `"8000-8100"`. Empty: all ports.
    ports: Vec<String>,
    protocol: Option<&'static str>,
    ask: bool,
    max_grant: Option<String>,
    /// Rendered `when` entries.
    when: Vec<String>,
}

impl Rule {
    /// A rule for these destinations, on every port and protocol until narrowed.
    #[must_use]
    pub fn to<S: Into<String>>(destinations: impl IntoIterator<Item = S>) -> Self {
        Self {
            to: destinations.into_iter().map(Into::into).collect(),
            ports: Vec::new(),
            protocol: None,
            ask: false,
            max_grant: None,
            when: Vec::new(),
        }
    }

    /// `access: ask`: reachable only through an approved grant.
    #[must_use]
    pub fn ask(mut self) -> Self {
        self.ask = true;
        self
    }

    /// `maxGrant`: the longest an approval of this rule may last.
    #[must_use]
    pub fn max_grant(mut self, d: impl Into<String>) -> Self {
        self.max_grant = Some(d.into());
        self
    }

    /// One `when` window: on every day, `hours` (`"HH:MM[:SS]-HH:MM[:SS]"`) in
    /// `timezone`.
    #[must_use]
    pub fn when(mut self, hours: &str, timezone: &str) -> Self {
        self.when.push(format!(
            "{{hours: {}, timezone: {}}}",
            quoted(hours),
            quoted(timezone)
        ));
        self
    }

    #[must_use]
    pub fn ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.ports.extend(ports.into_iter().map(|p| p.to_string()));
        self
    }

    /// The ports `lo` to `hi`, both included.
    #[must_use]
    pub fn port_range(mut self, lo: u16, hi: u16) -> Self {
        self.ports.push(quoted(&format!("{lo}-{hi}")));
        self
    }

    #[must_use]
    pub fn tcp(self) -> Self {
        self.protocol("tcp")
    }

    #[must_use]
    pub fn udp(self) -> Self {
        self.protocol("udp")
    }

    /// `protocol: any`, written out (leaving the protocol out means the same).
    #[must_use]
    pub fn any(self) -> Self {
        self.protocol("any")
    }

    fn protocol(mut self, p: &'static str) -> Self {
        self.protocol = Some(p);
        self
    }
}

impl Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let to: Vec<String> = self.to.iter().map(|t| quoted(t)).collect();
        writeln!(f, "    - to: [{}]", to.join(", "))?;
        if !self.ports.is_empty() {
            writeln!(f, "      ports: [{}]", self.ports.join(", "))?;
        }
        if let Some(p) = self.protocol {
            writeln!(f, "      protocol: {p}")?;
        }
        if self.ask {
            writeln!(f, "      access: ask")?;
        }
        if let Some(d) = &self.max_grant {
            writeln!(f, "      maxGrant: {}", quoted(d))?;
        }
        if !self.when.is_empty() {
            writeln!(f, "      when: [{}]", self.when.join(", "))?;
        }
        Ok(())
    }
}

/// One ingress rule: peers (addresses, CIDRs), the identity's own ports and protocol.
#[derive(Clone, Debug)]
pub struct InRule(Rule);

impl InRule {
    /// A rule for these peers, on every port and protocol until narrowed.
    #[must_use]
    pub fn from<S: Into<String>>(peers: impl IntoIterator<Item = S>) -> Self {
        Self(Rule::to(peers))
    }

    #[must_use]
    pub fn ports(self, ports: impl IntoIterator<Item = u16>) -> Self {
        Self(self.0.ports(ports))
    }

    #[must_use]
    pub fn port_range(self, lo: u16, hi: u16) -> Self {
        Self(self.0.port_range(lo, hi))
    }

    #[must_use]
    pub fn tcp(self) -> Self {
        Self(self.0.tcp())
    }

    #[must_use]
    pub fn udp(self) -> Self {
        Self(self.0.udp())
    }
}

impl Display for InRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.0;
        let from: Vec<String> = r.to.iter().map(|t| quoted(t)).collect();
        writeln!(f, "    - from: [{}]", from.join(", "))?;
        if !r.ports.is_empty() {
            writeln!(f, "      ports: [{}]", r.ports.join(", "))?;
        }
        if let Some(p) = r.protocol {
            writeln!(f, "      protocol: {p}")?;
        }
        Ok(())
    }
}

/// A way for a task to join an identity besides `zt-agent run`.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    cgroup: Option<String>,
    exe: Option<String>,
    sha256: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    /// A `container`, `pod` or `systemdUnit` selector: its key and its value, as YAML.
    workload: Option<(&'static str, String)>,
}

impl Selector {
    /// Tasks in cgroups matching `glob` (relative to the cgroup2 mount).
    #[must_use]
    pub fn cgroup(glob: impl Into<String>) -> Self {
        Self {
            cgroup: Some(glob.into()),
            ..Self::default()
        }
    }

    /// Tasks that exec the file at `path`.
    #[must_use]
    pub fn exe(path: impl Into<String>) -> Self {
        Self {
            exe: Some(path.into()),
            ..Self::default()
        }
    }

    /// Tasks that exec anything with this real uid; with `exe`, narrows it.
    #[must_use]
    pub fn uid(uid: u32) -> Self {
        Self::default().and_uid(uid)
    }

    /// Narrow this selector to a real uid.
    #[must_use]
    pub fn and_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Narrow this selector to a real gid.
    #[must_use]
    pub fn and_gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }

    /// Containers of `runtime` (docker, podman, containerd, any) carrying every label.
    #[must_use]
    pub fn container_labels(runtime: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            workload: Some((
                "container",
                format!("{{runtime: {runtime}, labels: {}}}", flow_map(labels)),
            )),
            ..Self::default()
        }
    }

    /// Containers of pods in `namespace` whose pods carry every label.
    #[must_use]
    pub fn pod(namespace: &str, labels: &[(&str, &str)], container: Option<&str>) -> Self {
        let container = container
            .map(|c| format!(", container: {}", quoted(c)))
            .unwrap_or_default();
        Self {
            workload: Some((
                "pod",
                format!(
                    "{{namespace: {}, labels: {}{container}}}",
                    quoted(namespace),
                    flow_map(labels)
                ),
            )),
            ..Self::default()
        }
    }

    /// The cgroup of systemd unit `unit`, wherever its slice puts it.
    #[must_use]
    pub fn systemd_unit(unit: &str) -> Self {
        Self {
            workload: Some(("systemdUnit", quoted(unit))),
            ..Self::default()
        }
    }

    /// Pin an `exe` selector's binary to its content.
    #[must_use]
    pub fn sha256(mut self, digest: impl Into<String>) -> Self {
        self.sha256 = Some(digest.into());
        self
    }
}

impl Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = [
            ("cgroup", self.cgroup.as_deref().map(quoted)),
            ("exe", self.exe.as_deref().map(quoted)),
            ("sha256", self.sha256.as_deref().map(quoted)),
            ("uid", self.uid.map(|u| u.to_string())),
            ("gid", self.gid.map(|g| g.to_string())),
            (
                self.workload.as_ref().map_or("workload", |w| w.0),
                self.workload.as_ref().map(|w| w.1.clone()),
            ),
        ];
        let mut lead = "    - ";
        for (key, value) in fields {
            if let Some(v) = value {
                writeln!(f, "{lead}{key}: {v}")?;
                lead = "      ";
            }
        }
        Ok(())
    }
}

/// A YAML double-quoted scalar: no string is misread as a number, an alias (`*.x`) or
/// a flow collection.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{"k": "v", ...}`
fn flow_map(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}: {}", quoted(k), quoted(v)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::agent_bin;

    fn everything() -> Policy {
        Identity::new("coder")
            .selector(Selector::cgroup("/zt-test/coder/**"))
            .selector(
                Selector::exe("/usr/bin/true")
                    .sha256("ab".repeat(32))
                    .and_uid(1001),
            )
            .selector(Selector::uid(1002).and_gid(1002))
            .exec_allow(["/usr/bin/git"])
            .exec_allow_pinned("/usr/bin/python3", "cd".repeat(32))
            .egress(
                Rule::to(["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"])
                    .ports([443])
                    .port_range(8000, 8100)
                    .tcp(),
            )
            .egress(Rule::to(["api.example.com", "*.githubusercontent.com"]).udp())
            .and(
                Identity::new("1234")
                    .audit()
                    .exec_allow(Vec::<String>::new()),
            )
            .and(Identity::new("other").egress(Rule::to(["::1"]).ports([9]).any()))
    }

    #[test]
    fn renders_the_documented_format() {
        let want = r#"apiVersion: zt-agent/v1
kind: Identity
metadata:
  name: "coder"
  owner: "tests@example.com"
spec:
  mode: enforce
  selectors:
    - cgroup: "/zt-test/coder/**"
    - exe: "/usr/bin/true"
      sha256: "abababababababababababababababababababababababababababababababab"
      uid: 1001
    - uid: 1002
      gid: 1002
  exec:
    allow:
      - "/usr/bin/git"
      - {path: "/usr/bin/python3", sha256: "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"}
  egress:
    - to: ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]
      ports: [443, "8000-8100"]
      protocol: tcp
    - to: ["api.example.com", "*.githubusercontent.com"]
      protocol: udp
---
apiVersion: zt-agent/v1
kind: Identity
metadata:
  name: "1234"
  owner: "tests@example.com"
spec:
  mode: audit
  exec:
    allow: []
  egress: []
---
apiVersion: zt-agent/v1
kind: Identity
metadata:
  name: "other"
  owner: "tests@example.com"
spec:
  mode: enforce
  egress:
    - to: ["::1"]
      ports: [9]
      protocol: any
"#;
        assert_eq!(everything().to_string(), want);
    }

    #[test]
    fn quotes_what_yaml_would_misread() {
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quoted("x\ny"), r#""x\u000ay""#);
    }

    /// The agent's own parser and validator accept every builder feature.
    #[test]
    fn policy_check_accepts_what_the_builder_renders() {
        let dir = std::env::temp_dir().join(format!("zt-test-builder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("policy.yaml"), everything().to_string()).expect("write");
        let out = std::process::Command::new(agent_bin())
            .args(["policy", "check"])
            .arg(&dir)
            .output()
            .expect("zt-agent policy check");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
