//! Policy pipeline: YAML files -> parse -> validate -> [`Policy`] -> [`compile`] -> map entries.
//!
//! Everything here is pure (no root, no kernel), so that a bad policy is rejected with every
//! problem listed before anything touches the running one.

mod compile;
mod decode;
mod dns_name;
pub mod edit;
mod model;
mod validate;
mod values;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::sys::fs::Dir;

pub use compile::{
    CompileError, Compiled, CompiledIdentity, DynamicKind, DynamicRule, NameRule, compile,
    port_ranges,
};
pub use model::*;
pub use values::{format_bytes, format_duration, parse_duration, parse_port_str, parse_target};

/// One problem in the policy source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the problem is not in a file's text (e.g. an unreadable directory).
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted path of the field, like `spec.egress[1].ports[0]`; empty for syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one pass, sorted by file and position.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{}", lines(.0))]
pub struct PolicyErrors(pub Vec<PolicyError>);

fn lines(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `name` is a policy file: `*.yaml` or `*.yml`, not hidden (editor temp files).
fn is_policy_file(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// How far [`load_dir`] trusts the directory it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// What the daemon enforces: the directory, every directory above it and every
    /// file must be root's and writable by no one else. Whoever could write one of them
    /// could give themselves any egress.
    Root,
    /// `policy check`: a draft anywhere, anyone's, read the same careful way.
    Any,
}

/// Largest policy file read (a 100,000-rule identity takes about 1.5 MB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// One policy file as read: its name, its path as shown, and its text or why not.
struct Read {
    name: String,
    display: String,
    bytes: Result<Vec<u8>, String>,
}

/// Read every policy file of `dir`: each opened once, without blocking (a FIFO is
/// refused, not waited on), checked on the open file (a regular file, at most
/// [`MAX_FILE_BYTES`], and with [`Trust::Root`] root's and writable by no one else).
/// A symlink is followed only while it stays inside `dir` (so that a ConfigMap-style
/// `a.yaml -> ..data/a.yaml` works and a link to a file elsewhere is refused).
fn read_dir_files(dir: &Path, trust: Trust) -> Result<Vec<Read>, PolicyError> {
    let shown = dir.display().to_string();
    let whole = |message: String| PolicyError {
        file: shown.clone(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
    };
    let d = match trust {
        Trust::Root => Dir::open(dir).and_then(|d| d.require_private_writes().map(|()| d)),
        Trust::Any => Dir::open_any(dir),
    }
    .map_err(|e| {
        whole(if e.is_not_found() {
            format!("cannot read policy directory: {e}")
        } else {
            format!("policy directory refused: {e}")
        })
    })?;
    let names = d
        .entries()
        .map_err(|e| whole(format!("cannot list policy directory: {e}")))?;
    Ok(names
        .into_iter()
        .filter(|n| is_policy_file(n))
        .map(|name| {
            let bytes = d
                .read_beneath(&name, MAX_FILE_BYTES)
                .map_err(|e| format!("policy file refused: {e}"));
            Read {
                display: dir.join(&name).display().to_string(),
                name,
                bytes,
            }
        })
        .collect())
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (not recursive, sorted by name).
///
/// # Errors
/// Every problem of every file, or one naming `dir` if it cannot be read or is not
/// trusted (see [`Trust`]).
pub fn load_dir(dir: &Path, trust: Trust) -> Result<Policy, PolicyErrors> {
    let files = read_dir_files(dir, trust).map_err(|e| PolicyErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut sources = Vec::new();
    for f in files {
        let error = |message| PolicyError {
            file: f.display.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            message,
        };
        match f.bytes {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(Source {
                    name: f.name,
                    display: f.display,
                    text,
                }),
                Err(e) => errors.push(error(format!("not UTF-8 text: {}", e.utf8_error()))),
            },
            Err(message) => errors.push(error(message)),
        }
    }
    load_sources(&sources, errors)
}

/// Why the daemon would refuse `dir` (for `policy check`, which reads any directory).
#[must_use]
pub fn trust_problems(dir: &Path) -> Vec<String> {
    match read_dir_files(dir, Trust::Root) {
        Err(e) => vec![e.to_string()],
        Ok(files) => files
            .into_iter()
            .filter_map(|f| f.bytes.err().map(|m| format!("{}: {m}", f.display)))
            .collect(),
    }
}

/// The digest `load_dir` would give `dir`'s policy, from the raw files, without
/// parsing: cheap enough to poll for changes. Unreadable or refused entries change
/// it too.
#[must_use]
pub fn source_digest(dir: &Path, trust: Trust) -> String {
    let mut h = Sha256::new();
    match read_dir_files(dir, trust) {
        Err(e) => h.update(e.to_string().as_bytes()),
        Ok(files) => {
            for f in files {
                let bytes = f.bytes.unwrap_or_else(String::into_bytes);
                h.update(f.name.as_bytes());
                h.update([0u8]);
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(&bytes);
            }
        }
    }
    hex::encode(h.finalize())
}

/// Loads one file's text; the same pipeline as [`load_dir`].
///
/// # Errors
/// Every problem of the text.
pub fn load_str(file_name: &str, text: &str) -> Result<Policy, PolicyErrors> {
    let source = Source {
        name: file_name.to_owned(),
        display: file_name.to_owned(),
        text: text.to_owned(),
    };
    load_sources(std::slice::from_ref(&source), Vec::new())
}

struct Source {
    /// File name, as hashed.
    name: String,
    /// Path, as shown in errors and locations.
    display: String,
    text: String,
}

fn load_sources(sources: &[Source], mut errors: Vec<PolicyError>) -> Result<Policy, PolicyErrors> {
    let mut identities = Vec::new();
    for source in sources {
        let docs = yaml::parse_documents(&source.display, &source.text, &mut errors);
        let mut decoder = decode::Decoder {
            file: &source.display,
            errors: &mut errors,
        };
        for doc in &docs {
            if let Some(identity) = decoder.identity(doc) {
                identities.push(identity);
            }
        }
    }
    validate::cross_check(&identities, &mut errors);
    if !errors.is_empty() {
        // Stable sort keeps same-position errors in the order they were found.
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        errors.dedup();
        return Err(PolicyErrors(errors));
    }
    identities.sort_by(|a, b| a.name.cmp(&b.name));
    let mut names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    names.sort();
    Ok(Policy {
        identities,
        sha256: hash_sources(sources),
        sources: names,
    })
}

/// sha256 over every file sorted by name: name, NUL, content length (u64 big endian),
/// content. The framing keeps different splits of the same bytes apart.
fn hash_sources(sources: &[Source]) -> String {
    let mut sorted: Vec<&Source> = sources.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for s in sorted {
        h.update(s.name.as_bytes());
        h.update([0u8]);
        h.update((s.text.len() as u64).to_be_bytes());
        h.update(s.text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Stable identity ids: every existing name keeps its id, even when it left the policy
/// (its live tasks are still tagged with it); new names get the lowest free id in
/// `1..IDENTITY_QUARANTINE`, in name order. A name left without an id because every id is
/// taken makes [`compile`] fail.
#[must_use]
pub fn assign_ids(existing: &BTreeMap<String, u32>, policy: &Policy) -> BTreeMap<String, u32> {
    let mut ids = existing.clone();
    let used: BTreeSet<u32> = ids.values().copied().collect();
    let mut free = (1..zt_agent_common::IDENTITY_QUARANTINE).filter(|id| !used.contains(id));
    let mut new: Vec<&str> = policy
        .identities
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !existing.contains_key(*n))
        .collect();
    new.sort_unstable();
    new.dedup();
    for name in new {
        match free.next() {
            Some(id) => {
                ids.insert(name.to_owned(), id);
            }
            None => break,
        }
    }
    ids
}

/// What holds for any text fed to the policy pipeline: it never panics; a text that
/// loads compiles or fails with a compile error; every error names the file and a
/// place inside the text (or line 0 for none). The fuzz target and the tests check it
/// on hostile input; `true` when the text loaded.
///
/// # Panics
/// When a property does not hold.
pub fn check_any_text(text: &str) -> bool {
    match load_str("fuzz.yaml", text) {
        Ok(p) => {
            let ids = assign_ids(&BTreeMap::new(), &p);
            let _ = compile(&p, &ids);
            assert!(p.identities.iter().all(|i| ids.contains_key(&i.name)));
            true
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            let lines = text.split('\n').count();
            for e in &errors.0 {
                assert_eq!(e.file, "fuzz.yaml", "{e}");
                assert!(e.line <= lines + 1, "{e}: past the last of {lines} lines");
                assert!(e.line == 0 || e.column >= 1, "{e}");
                assert!(!e.message.is_empty(), "{e}");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// A complete identity: metadata with owner and description, a SPIFFE id, enforce mode,
    /// a cgroup selector, and egress to IPv4 and IPv6 networks and a single address, with a
    /// port, a port range and a protocol.
    const FULL_EXAMPLE: &str = r#"
apiVersion: zt-agent/v1
kind: Identity
metadata:
  name: coder                      # [a-z0-9-]{1,63}; the metrics label
  owner: alice@example.com         # required: the accountable human
  description: Code assistant; may reach GitHub and the model API
spec:
  spiffeId: spiffe://example.org/agent/coder
  mode: enforce
  selectors:
    - cgroup: /zt/coder/**
  egress:
    - to: [10.0.0.0/8, "2001:db8::/32", 127.0.0.1]
      ports: [443, "8000-8100"]
      protocol: tcp
    - to: [140.82.112.0/20]
      ports: [443]
"#;

    fn ok(text: &str) -> Policy {
        load_str("t.yaml", text).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
    }

    fn errs(text: &str) -> Vec<PolicyError> {
        match load_str("t.yaml", text) {
            Ok(p) => panic!("expected errors, got {p:?}"),
            Err(e) => e.0,
        }
    }

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_design_example() {
        let p = ok(FULL_EXAMPLE);
        assert_eq!(p.identities.len(), 1);
        let id = &p.identities[0];
        assert_eq!(id.name, "coder");
        assert_eq!(id.owner, "alice@example.com");
        assert_eq!(
            id.description.as_deref(),
            Some("Code assistant; may reach GitHub and the model API")
        );
        assert_eq!(id.spiffe_id(), "spiffe://example.org/agent/coder");
        assert_eq!(id.mode, Mode::Enforce);
        assert_eq!(id.cgroup_globs(), ["/zt/coder/**"]);
        assert_eq!(id.selectors[0].location.line, 12);
        assert_eq!(id.egress.len(), 2);
        let r = &id.egress[0];
        assert_eq!(
            r.to,
            [net("10.0.0.0/8"), net("2001:db8::/32"), net("127.0.0.1/32")]
        );
        assert_eq!(r.ports, [(443, 443), (8000, 8100)]);
        assert_eq!(r.protocol, Protocol::Tcp);
        assert_eq!(
            (r.location.line, r.location.column),
            (14, 7),
            "rule location is its first key"
        );
        assert_eq!(id.egress[1].protocol, Protocol::Any);
        assert_eq!(id.location.file, "t.yaml");
        assert_eq!((id.location.line, id.location.column), (5, 9));
        assert_eq!(p.sources, ["t.yaml"]);
        assert_eq!(p.sha256.len(), 64);
    }

    #[test]
    fn defaults() {
        let p = ok("apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: svc, owner: bob}\n");
        let id = &p.identities[0];
        assert_eq!(id.mode, Mode::Enforce);
        assert_eq!(
            id.spiffe_id(),
            format!("spiffe://{DEFAULT_TRUST_DOMAIN}/svc")
        );
        assert!(id.egress.is_empty(), "omitted egress is deny all");
        assert!(id.selectors.is_empty());
        assert_eq!(id.description, None);
        let p = ok(
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: svc, owner: bob}\nspec:\n  mode: audit\n  egress:\n  - to: [1.1.1.1]\n",
        );
        let id = &p.identities[0];
        assert_eq!(id.mode, Mode::Audit);
        assert_eq!(id.egress[0].ports, [ALL_PORTS]);
        assert_eq!(id.egress[0].protocol, Protocol::Any);
    }

    #[test]
    fn multi_document_files() {
        let text = "\
apiVersion: zt-agent/v1
kind: Identity
metadata: {name: b, owner: x}
---
# a comment-only gap is not a document
---
apiVersion: zt-agent/v1
kind: Identity
metadata: {name: a, owner: y}
spec:
  egress:
  - to: [192.0.2.0/24]
...
";
        let p = ok(text);
        assert_eq!(
            p.identities.iter().map(|i| &i.name[..]).collect::<Vec<_>>(),
            ["a", "b"],
            "sorted by name"
        );
        assert_eq!(p.identity("a").map(|i| i.location.line), Some(9));
        assert!(p.identity("c").is_none());
    }

    #[test]
    fn ipv4_mapped_addresses_become_ipv4() {
        let p = ok(
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: a, owner: y}\nspec:\n  egress:\n  - to: [\"::ffff:10.0.0.0/104\", \"::ffff:192.0.2.1\", \"2001:db8::1\"]\n",
        );
        assert_eq!(
            p.identities[0].egress[0].to,
            [
                net("10.0.0.0/8"),
                net("192.0.2.1/32"),
                net("2001:db8::1/128")
            ]
        );
    }

    #[test]
    fn ids_are_stable() {
        let p1 = ok(
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: b, owner: x}\n---\napiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: a, owner: x}\n",
        );
        let ids = assign_ids(&BTreeMap::new(), &p1);
        assert_eq!(ids, BTreeMap::from([("a".into(), 1), ("b".into(), 2)]));
        assert_eq!(assign_ids(&ids, &p1), ids, "idempotent");
        // `a` leaves, `c` and `0` arrive: `a` keeps 1, new names take the lowest free ids.
        let p2 = ok(
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: c, owner: x}\n---\napiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: b, owner: x}\n---\napiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: \"0\", owner: x}\n",
        );
        let ids2 = assign_ids(&ids, &p2);
        assert_eq!(
            ids2,
            BTreeMap::from([
                ("0".into(), 3),
                ("a".into(), 1),
                ("b".into(), 2),
                ("c".into(), 4)
            ])
        );
        // Holes are reused.
        let existing = BTreeMap::from([("x".into(), 1), ("y".into(), 3)]);
        assert_eq!(assign_ids(&existing, &p2)["0"], 2);
        assert_eq!(assign_ids(&existing, &p2)["b"], 4);
        // No id left: the name stays unassigned, and compile says so.
        let full: BTreeMap<String, u32> = (1..zt_agent_common::IDENTITY_QUARANTINE)
            .map(|i| (format!("n{i}"), i))
            .collect();
        let ids3 = assign_ids(&full, &p2);
        assert!(!ids3.contains_key("b"));
        assert!(matches!(
            compile(&p2, &ids3),
            Err(CompileError::MissingId { .. })
        ));
    }

    #[test]
    fn every_error_in_one_pass_with_positions() {
        let text = "\
apiVersion: zt-agent/v2
kind: Identity
metadata:
  name: Bad_Name
  owner: \"\"
  colour: blue
spec:
  mode: strict
  egress:
    - to: [10.0.0.1/8, \"api.*.com\"]
      ports: [0, \"90-80\", 443]
      protocol: icmp
    - to: []
---
apiVersion: zt-agent/v1
kind: Identity
metadata: {name: ok, owner: me}
spec:
  selectors:
    - exe: usr/bin/curl
  exec:
    allow: [/usr/bin/git, git]
";
        let e = errs(text);
        let got: Vec<(usize, usize, &str)> = e
            .iter()
            .map(|e| (e.line, e.column, e.field.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 13, "apiVersion"),
                (4, 9, "metadata.name"),
                (5, 10, "metadata.owner"),
                (6, 3, "metadata.colour"),
                (8, 9, "spec.mode"),
                (10, 12, "spec.egress[0].to[0]"),
                (10, 24, "spec.egress[0].to[1]"),
                (11, 15, "spec.egress[0].ports[0]"),
                (11, 18, "spec.egress[0].ports[1]"),
                (12, 17, "spec.egress[0].protocol"),
                (13, 11, "spec.egress[1].to"),
                (20, 12, "spec.selectors[0].exe"),
                (22, 27, "spec.exec.allow[1]"),
            ],
            "{}",
            PolicyErrors(e.clone())
        );
        let shown = PolicyErrors(e).to_string();
        assert!(shown.contains(
            "t.yaml:10:12: spec.egress[0].to[0]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
        ));
        assert!(shown.contains("t.yaml:11:18: spec.egress[0].ports[1]: inverted port range"));
        assert!(shown.contains(
            "t.yaml:10:24: spec.egress[0].to[1]: invalid DNS name `api.*.com`: `*` may only be the whole first label"
        ));
        assert!(shown.contains("invalid path `usr/bin/curl`: expected an absolute file path"));
        assert_eq!(shown.lines().count(), 13);
    }

    #[test]
    fn duplicates_and_overlaps_name_both_sides() {
        let dir = TempDir::new("dup");
        dir.write(
            "a.yaml",
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: coder, owner: x}\nspec:\n  selectors: [{cgroup: /svc/**}]\n",
        );
        dir.write(
            "b.yml",
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: coder, owner: y}\n---\napiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: other, owner: y}\nspec:\n  selectors:\n  - cgroup: /svc/web/*\n  - cgroup: /zt/coder/x\n",
        );
        dir.write("notes.txt", "not a policy");
        dir.write(".hidden.yaml", "garbage: [");
        let e = load_dir(&dir.0, Trust::Root)
            .err()
            .unwrap_or_else(|| panic!("expected errors"))
            .0;
        let shown = PolicyErrors(e.clone()).to_string();
        assert_eq!(e.len(), 3, "{shown}");
        let a = dir.0.join("a.yaml").display().to_string();
        let b = dir.0.join("b.yml").display().to_string();
        assert!(
            shown.contains(&format!(
                "{b}:3:18: metadata.name: duplicate identity `coder`: already defined at {a}:3:18"
            )),
            "{shown}"
        );
        assert!(shown.contains(&format!("{b}:10:13: spec.selectors[0].cgroup: cgroup selector `/svc/web/*` of identity `other` overlaps the cgroup selector `/svc/**` of identity `coder` ({a}:5:24)")), "{shown}");
        assert!(shown.contains("cgroup selector `/zt/coder/x` of identity `other` overlaps the launch cgroup `/zt/coder/**` of identity `coder`"), "{shown}");
    }

    #[test]
    fn load_dir_hashes_sorted_sources() {
        let one = TempDir::new("hash1");
        let doc = |n: &str| {
            format!("apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {{name: {n}, owner: x}}\n")
        };
        one.write("b.yaml", &doc("b"));
        one.write("a.yaml", &doc("a"));
        let two = TempDir::new("hash2");
        two.write("a.yaml", &doc("a"));
        two.write("b.yaml", &doc("b"));
        let p1 = load_dir(&one.0, Trust::Root).unwrap_or_else(|e| panic!("{e}"));
        let p2 = load_dir(&two.0, Trust::Root).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p1.sha256, p2.sha256);
        assert_eq!(source_digest(&one.0, Trust::Root), p1.sha256);
        assert_eq!(p1.sources, ["a.yaml", "b.yaml"]);
        // Moving a document between files changes the hash.
        let three = TempDir::new("hash3");
        three.write("a.yaml", &format!("{}---\n{}", doc("a"), doc("b")));
        let p3 = load_dir(&three.0, Trust::Root).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(p3.sha256, p1.sha256);
        assert_eq!(p3.identities, {
            let mut ids = p1.identities.clone();
            for i in &mut ids {
                i.location.file = three.0.join("a.yaml").display().to_string();
            }
            ids[1].location.line = 7;
            ids
        });
        // An empty directory is an empty policy.
        let empty = TempDir::new("empty");
        assert!(load_dir(&empty.0, Trust::Root).is_ok_and(|p| p.identities.is_empty()));
    }

    /// What the daemon reads only from root: a file of another user's, a directory
    /// others may write, a link out of the directory, a FIFO, an oversized file.
    #[test]
    fn untrusted_sources_are_refused_naming_the_file() {
        use std::os::unix::fs::PermissionsExt as _;
        // SAFETY: no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (sudo ./x test)"
        );
        let doc = "apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {name: a, owner: x}\n";
        let shown = |dir: &TempDir| match load_dir(&dir.0, Trust::Root) {
            Ok(_) => panic!("{} was trusted", dir.0.display()),
            Err(e) => e.to_string(),
        };
        let dir = TempDir::new("trust");
        dir.write("a.yaml", doc);
        let a = dir.0.join("a.yaml");
        std::os::unix::fs::chown(&a, Some(65534), None).expect("chown");
        let e = shown(&dir);
        assert!(
            e.contains("a.yaml: policy file refused") && e.contains("uid 65534"),
            "{e}"
        );
        assert!(
            load_dir(&dir.0, Trust::Any).is_ok(),
            "policy check reads any draft"
        );
        assert_eq!(trust_problems(&dir.0).len(), 1);
        std::os::unix::fs::chown(&a, Some(0), None).expect("chown");
        assert!(load_dir(&dir.0, Trust::Root).is_ok());

        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = shown(&dir);
        assert!(
            e.contains("policy directory refused") && e.contains("0777"),
            "{e}"
        );
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(shown(&dir).contains("0666"));
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        let outside = TempDir::new("trust-outside");
        outside.write("b.yaml", doc);
        std::os::unix::fs::symlink(outside.0.join("b.yaml"), dir.0.join("b.yaml")).expect("ln");
        assert!(shown(&dir).contains("leads out of the directory"));
        std::fs::remove_file(dir.0.join("b.yaml")).expect("rm");

        let c = std::ffi::CString::new(dir.0.join("c.yaml").display().to_string()).expect("c");
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(shown(&dir).contains("not a regular file"));
        assert_ne!(source_digest(&dir.0, Trust::Root), String::new());
        std::fs::remove_file(dir.0.join("c.yaml")).expect("rm");

        let big = "#".repeat(usize::try_from(MAX_FILE_BYTES).expect("cap") + 1);
        dir.write("d.yaml", &big);
        assert!(shown(&dir).contains("larger than"));
    }

    #[test]
    fn missing_dir_is_an_error_naming_it() {
        let e = load_dir(Path::new("/nonexistent/zt-agent-policies"), Trust::Root)
            .err()
            .unwrap_or_else(|| panic!("expected an error"));
        let shown = e.to_string();
        assert!(
            shown.starts_with("/nonexistent/zt-agent-policies: cannot read policy directory"),
            "{shown}"
        );
    }

    /// Each corpus file is one malformed policy whose first line says which error to expect.
    #[test]
    fn malformed_corpus() {
        let dir = format!("{}/tests/policy_corpus", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        assert!(files.len() >= 20, "only {} corpus cases", files.len());
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut expects = Vec::new();
            let mut at = Vec::new();
            for line in text.lines().take_while(|l| l.starts_with('#')) {
                if let Some(x) = line.strip_prefix("# expect: ") {
                    expects.push(x.trim().to_owned());
                } else if let Some(x) = line.strip_prefix("# at: ") {
                    at.push(x.trim().to_owned());
                }
            }
            assert!(!expects.is_empty(), "{name}: no `# expect:` line");
            let errors = match load_str(&name, &text) {
                Ok(_) => panic!("{name}: loaded without errors"),
                Err(e) => e.0,
            };
            let shown = PolicyErrors(errors.clone()).to_string();
            for (i, expect) in expects.iter().enumerate() {
                let hit = errors
                    .iter()
                    .find(|e| e.to_string().contains(expect.as_str()));
                let Some(hit) = hit else {
                    panic!("{name}: no error contains {expect:?}; got:\n{shown}");
                };
                if let Some(pos) = at.get(i) {
                    assert_eq!(
                        format!("{}:{}", hit.line, hit.column),
                        *pos,
                        "{name}: position of {expect:?}; got:\n{shown}"
                    );
                }
                assert!(shown.starts_with(&format!("{name}:")), "{name}: {shown}");
            }
        }
    }

    /// The shipped examples must load and compile.
    #[test]
    fn examples_load_and_compile() {
        let dir = format!("{}/../policies", env!("CARGO_MANIFEST_DIR"));
        let policy = load_dir(Path::new(&dir), Trust::Any).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = policy.identities.iter().map(|i| i.name.as_str()).collect();
        assert!(
            names.contains(&"coder") && names.contains(&"telemetry"),
            "{names:?}"
        );
        let ids = assign_ids(&BTreeMap::new(), &policy);
        let c = compile(&policy, &ids).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.identities.len(), policy.identities.len());
        assert_eq!(c.sha256, policy.sha256);
        let telemetry = policy
            .identity("telemetry")
            .unwrap_or_else(|| panic!("telemetry"));
        assert_eq!(
            telemetry.cgroup_globs(),
            ["/system.slice/telemetry.service"]
        );
        let broker: IpAddr = [192, 168, 1, 10].into();
        assert!(
            telemetry
                .egress
                .iter()
                .any(|r| r.to.iter().any(|n| n.contains(&broker)))
        );
    }

    /// A scratch directory removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "zt-policy-test-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            Self(p)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The policy fuzz target's property on a fixed stream of mutated policies (bytes
    /// flipped, cut, duplicated, YAML tokens spliced in), so that every CI run exercises
    /// it.
    #[test]
    fn mutated_policies_never_panic_and_every_error_is_located() {
        let bases = [
            FULL_EXAMPLE,
            include_str!("../../../policies/ai-agent.yaml"),
            include_str!("../../../policies/iot-service.yaml"),
        ];
        let tokens: [&str; 28] = [
            "- ",
            ": ",
            "{",
            "}",
            "[",
            "]",
            ",",
            "&a ",
            "*a",
            "!!binary ",
            "\t",
            "\"",
            "'",
            "---\n",
            "...\n",
            "\u{feff}",
            "0x1f",
            "-1",
            "99999999999999999999",
            "\\",
            "#",
            "? ",
            "|\n",
            ">\n",
            "%YAML 1.2\n",
            "*.",
            "::ffff:",
            "\u{0}",
        ];
        let mut seed = 0x6a09_e667_f3bc_c908_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut loaded, mut rejected) = (0, 0);
        for case in 0..10_000 {
            let mut text = bases[case % bases.len()].as_bytes().to_vec();
            for _ in 0..(1 + next() % 4) {
                let v = next();
                let n = text.len().max(1);
                let at = (v >> 8) as usize % n;
                match v % 5 {
                    0 if !text.is_empty() => text[at] = (v >> 40) as u8,
                    1 => {
                        let end = (at + (v >> 32) as usize % 40).min(text.len());
                        text.drain(at.min(end)..end);
                    }
                    2 => {
                        let t = tokens[(v >> 32) as usize % tokens.len()];
                        let at = at.min(text.len());
                        text.splice(at..at, t.bytes());
                    }
                    3 => {
                        let end = (at + (v >> 32) as usize % 80).min(text.len());
                        let piece = text[at.min(end)..end].to_vec();
                        text.splice(end..end, piece);
                    }
                    _ => text.truncate(at),
                }
            }
            let text = String::from_utf8_lossy(&text);
            if check_any_text(&text) {
                loaded += 1;
            } else {
                rejected += 1;
            }
        }
        // Both outcomes are reached: the stream is not all syntax errors.
        assert!(
            loaded > 100 && rejected > 1_000,
            "{loaded} loaded, {rejected} rejected"
        );
    }

    #[test]
    fn limits_decode_and_every_bad_one_names_its_field() {
        let p = ok(&format!(
            "{FULL_EXAMPLE}  limits:\n    - {{uploadBytes: 100MiB, per: 1h}}\n    - {{uploadBytes: 5000000, per: 10m, scope: destination}}\n"
        ));
        let l = &p.identities[0].limits;
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].upload_bytes, l[0].per_secs, l[0].scope),
            (100 << 20, 3600, LimitScope::Identity)
        );
        assert_eq!(
            (l[1].upload_bytes, l[1].scope),
            (5_000_000, LimitScope::Destination)
        );
        for (bad, field, says) in [
            (
                "{uploadBytes: 0, per: 1h}",
                "spec.limits[0].uploadBytes",
                "more than zero",
            ),
            (
                "{uploadBytes: 10mb, per: 1h}",
                "spec.limits[0].uploadBytes",
                "invalid size",
            ),
            (
                "{uploadBytes: [1], per: 1h}",
                "spec.limits[0].uploadBytes",
                "a size",
            ),
            ("{per: 1h}", "spec.limits[0].uploadBytes", "missing"),
            ("{uploadBytes: 1MiB}", "spec.limits[0].per", "missing"),
            (
                "{uploadBytes: 1MiB, per: 5s}",
                "spec.limits[0].per",
                "out of range",
            ),
            (
                "{uploadBytes: 1MiB, per: 1h, scope: peer}",
                "spec.limits[0].scope",
                "identity or destination",
            ),
            (
                "{uploadBytes: 1MiB, per: 1h, cap: 2}",
                "spec.limits[0]",
                "unknown field",
            ),
        ] {
            let e = errs(&format!("{FULL_EXAMPLE}  limits:\n    - {bad}\n"));
            assert!(
                e.iter()
                    .any(|e| e.field.starts_with(field) && e.message.contains(says) && e.line > 0),
                "{bad}: {e:?}"
            );
        }
        // One limit may be written as a map, as DESIGN.md shows it.
        let one = ok(&format!(
            "{FULL_EXAMPLE}  limits: {{uploadBytes: 1GB, per: 1d}}\n"
        ));
        assert_eq!(one.identities[0].limits[0].upload_bytes, 1_000_000_000);
        let e = errs(&format!(
            "{FULL_EXAMPLE}  limits:\n    - {{uploadBytes: 1MiB, per: 1h}}\n    - {{uploadBytes: 2MiB, per: 1h}}\n"
        ));
        assert!(
            e.iter()
                .any(|e| e.field == "spec.limits[1]" && e.message.contains("one cap")),
            "{e:?}"
        );
    }
}
