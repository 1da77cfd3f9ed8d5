//! YAML text to a tree with positions, then the strict schema of one `Identity` document.
//!
//! The tree is built from the parser's events rather than through serde so that one pass
//! can report every problem of a document (serde stops at the first), keep the position of
//! every key and value, see duplicate keys, and tell quoted from plain scalars.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::PolicyError;
use super::model::{
    ALL_PORTS, API_VERSION, CgroupSelector, DnsName, EgressRule, ExeSelector, ExecPath, Identity,
    KIND_IDENTITY, Location, Mode, PrincipalSelector, Protocol, QUARANTINE_NAME, RESERVED_NAME,
    Target,
};

/// Bound on nesting: the tree is walked recursively, and no policy needs more than a
/// handful of levels.
const MAX_DEPTH: usize = 64;

/// Bound on the nodes of one file after alias expansion, against "billion laughs" input.
const MAX_NODES: usize = 4_000_000;

/// A YAML node and where it starts (1-based line and column).
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub kind: Kind,
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Debug)]
pub(super) enum Kind {
    /// `plain` scalars are resolved by the YAML 1.2 core schema; quoted ones are strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// The core-schema type of a scalar, for type checks and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScalarType {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

impl Node {
    fn scalar_type(&self) -> Option<ScalarType> {
        match &self.kind {
            Kind::Scalar { text, plain: true } => Some(resolve_plain(text)),
            Kind::Scalar { plain: false, .. } => Some(ScalarType::Str),
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        match (&self.kind, self.scalar_type()) {
            (Kind::Seq(_), _) => "a list",
            (Kind::Map(_), _) => "a map",
            (_, Some(ScalarType::Null)) => "an empty value",
            (_, Some(ScalarType::Bool)) => "a boolean",
            (_, Some(ScalarType::Int)) => "an integer",
            (_, Some(ScalarType::Float)) => "a number",
            _ => "a string",
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> ScalarType {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarType::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return ScalarType::Bool,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return ScalarType::Float,
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return ScalarType::Int;
    }
    if let Some(h) = s.strip_prefix("0x")
        && !h.is_empty()
        && h.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return ScalarType::Int;
    }
    if let Some(o) = s.strip_prefix("0o")
        && !o.is_empty()
        && o.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return ScalarType::Int;
    }
    if is_float(digits) {
        return ScalarType::Float;
    }
    ScalarType::Str
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, sign already stripped.
fn is_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exp_ok
}

/// A container being built.
enum Frame {
    Seq {
        items: Vec<Node>,
        start: (usize, usize),
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        start: (usize, usize),
        anchor: usize,
    },
}

fn pos(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

fn syntax_error(file: &str, (line, column): (usize, usize), message: String) -> PolicyError {
    PolicyError {
        file: file.to_owned(),
        line,
        column,
        field: String::new(),
        message,
    }
}

fn node_count(n: &Node) -> usize {
    match &n.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(items) => 1 + items.iter().map(node_count).sum::<usize>(),
        Kind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| node_count(k) + node_count(v))
                .sum::<usize>()
        }
    }
}

/// Parses every document of `text`. Documents completed before a syntax error are
/// returned too, so that their problems are reported in the same pass. Empty documents
/// are dropped.
pub(super) fn parse_documents(file: &str, text: &str, errors: &mut Vec<PolicyError>) -> Vec<Node> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    let err = |errors: &mut Vec<PolicyError>, at: (usize, usize), msg: String| {
        errors.push(syntax_error(file, at, msg));
    };
    let collection_tag = |errors: &mut Vec<PolicyError>, at: (usize, usize), tag: Option<&Tag>| {
        if let Some(tag) = tag {
            errors.push(syntax_error(
                file,
                at,
                format!("YAML tag {}{} is not supported", tag.handle, tag.suffix),
            ));
        }
    };

    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(ev) => ev,
            Err(e) => {
                let m = e.marker();
                err(
                    errors,
                    (m.line(), m.col() + 1),
                    format!("YAML syntax error: {}", e.info()),
                );
                return docs;
            }
        };
        let at = pos(&span);
        if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..))
            && stack.len() >= MAX_DEPTH
        {
            err(
                errors,
                at,
                format!("nested more than {MAX_DEPTH} levels deep"),
            );
            return docs;
        }
        // A finished node, to be placed into its parent.
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                anchors.clear();
                root = None;
                None
            }
            Event::DocumentEnd => {
                if let Some(doc) = root.take()
                    && !matches!(doc.scalar_type(), Some(ScalarType::Null))
                {
                    docs.push(doc);
                }
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => {
                    nodes += node_count(n);
                    if nodes > MAX_NODES {
                        err(
                            errors,
                            at,
                            format!(
                                "document too large: more than {MAX_NODES} nodes after alias expansion"
                            ),
                        );
                        return docs;
                    }
                    // The copy takes the position of the alias, where the reader looks.
                    let mut n = n.clone();
                    n.line = at.0;
                    n.column = at.1;
                    Some((n, 0))
                }
                None => {
                    err(errors, at, "YAML alias refers to an unknown anchor".into());
                    return docs;
                }
            },
            Event::Scalar(text, style, anchor, tag) => {
                let mut plain = style == ScalarStyle::Plain;
                if let Some(tag) = tag {
                    if tag.is_yaml_core_schema() && tag.suffix == "str" {
                        plain = false;
                    } else {
                        err(
                            errors,
                            at,
                            format!(
                                "YAML tag {}{} is not supported (only !!str is)",
                                tag.handle, tag.suffix
                            ),
                        );
                    }
                }
                nodes += 1;
                Some((
                    Node {
                        kind: Kind::Scalar {
                            text: text.into_owned(),
                            plain,
                        },
                        line: at.0,
                        column: at.1,
                    },
                    anchor,
                ))
            }
            Event::SequenceStart(anchor, tag) => {
                collection_tag(errors, at, tag.as_deref());
                nodes += 1;
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    start: at,
                    anchor,
                });
                None
            }
            Event::MappingStart(anchor, tag) => {
                collection_tag(errors, at, tag.as_deref());
                nodes += 1;
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    start: at,
                    anchor,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    start,
                    anchor,
                }) => Some((
                    Node {
                        kind: Kind::Seq(items),
                        line: start.0,
                        column: start.1,
                    },
                    anchor,
                )),
                Some(Frame::Map {
                    entries,
                    start,
                    anchor,
                    ..
                }) => Some((
                    Node {
                        kind: Kind::Map(entries),
                        line: start.0,
                        column: start.1,
                    },
                    anchor,
                )),
                None => None,
            },
        };
        if nodes > MAX_NODES {
            err(
                errors,
                at,
                format!("document too large: more than {MAX_NODES} nodes"),
            );
            return docs;
        }
        if let Some((node, anchor)) = finished {
            if anchor != 0 {
                anchors.insert(anchor, node.clone());
            }
            match stack.last_mut() {
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map { entries, key, .. }) => match key.take() {
                    Some(k) => entries.push((k, node)),
                    None => *key = Some(node),
                },
                None => root = Some(node),
            }
        }
    }
    docs
}

// ---------------------------------------------------------------------------------------
// Schema

/// Decoding context of one file: collects errors instead of stopping at the first.
pub(super) struct Decoder<'a> {
    pub file: &'a str,
    pub errors: &'a mut Vec<PolicyError>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The fields of a map, by name, with the position of their key.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
    line: usize,
    column: usize,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }

    fn key(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, k, _)| *k)
    }
}

impl Decoder<'_> {
    fn error(&mut self, line: usize, column: usize, field: &str, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn at(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        self.error(node.line, node.column, field, message);
    }

    fn location(&self, node: &Node) -> Location {
        Location {
            file: self.file.to_owned(),
            line: node.line,
            column: node.column,
        }
    }

    fn type_error(&mut self, node: &Node, field: &str, expected: &str) {
        let found = node.describe();
        let hint = if expected == "a string" && matches!(node.kind, Kind::Scalar { .. }) {
            " (quote it)"
        } else {
            ""
        };
        self.at(
            node,
            field,
            format!("expected {expected}, found {found}{hint}"),
        );
    }

    /// A map whose keys are all in `allowed`; reports unknown and duplicate keys.
    fn fields<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let Kind::Map(entries) = &node.kind else {
            self.type_error(node, path, "a map");
            return None;
        };
        let mut out = Fields {
            entries: Vec::new(),
            line: node.line,
            column: node.column,
        };
        for (k, v) in entries {
            let name = match (&k.kind, k.scalar_type()) {
                (Kind::Scalar { text, .. }, Some(ScalarType::Str)) => text.as_str(),
                _ => {
                    self.at(
                        k,
                        path,
                        format!("keys must be field names, found {}", k.describe()),
                    );
                    continue;
                }
            };
            let field = join(path, name);
            if let Some(first) = out.key(name) {
                let (l, c) = (first.line, first.column);
                self.at(
                    k,
                    &field,
                    format!("duplicate field `{name}` (first given at {l}:{c})"),
                );
                continue;
            }
            if !allowed.contains(&name) {
                let hint = suggest(name, allowed)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                self.at(
                    k,
                    &field,
                    format!(
                        "unknown field `{name}`, expected one of: {}{hint}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            out.entries.push((name, k, v));
        }
        Some(out)
    }

    fn required<'n>(&mut self, f: &Fields<'n>, path: &str, name: &str) -> Option<&'n Node> {
        let v = f.get(name);
        if v.is_none() {
            self.error(
                f.line,
                f.column,
                &join(path, name),
                format!("missing required field `{name}`"),
            );
        }
        v
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match (&node.kind, node.scalar_type()) {
            (Kind::Scalar { text, .. }, Some(ScalarType::Str)) => Some(text.clone()),
            _ => {
                self.type_error(node, field, "a string");
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.type_error(node, field, "a list");
                None
            }
        }
    }

    /// One `kind: Identity` document. Returns the identity with whatever parts were valid,
    /// so that cross-document checks still run; `None` when it has no usable name.
    pub(super) fn identity(&mut self, doc: &Node) -> Option<Identity> {
        let top = self.fields(doc, "", &["apiVersion", "kind", "metadata", "spec"])?;
        if let Some(v) = self.required(&top, "", "apiVersion")
            && let Some(s) = self.string(v, "apiVersion")
            && s != API_VERSION
        {
            self.at(
                v,
                "apiVersion",
                format!("unsupported apiVersion `{s}`, expected `{API_VERSION}`"),
            );
        }
        let kind = self.required(&top, "", "kind");
        if let Some(v) = kind {
            let s = self.string(v, "kind")?;
            if s != KIND_IDENTITY {
                // The rest of the schema depends on the kind: nothing more to check.
                self.at(
                    v,
                    "kind",
                    format!("unsupported kind `{s}`, expected `{KIND_IDENTITY}`"),
                );
                return None;
            }
        }
        let metadata = self.required(&top, "", "metadata");
        let meta =
            metadata.and_then(|m| self.fields(m, "metadata", &["name", "owner", "description"]));
        // The spec is checked even when the metadata is unusable, to report everything.
        let spec = match top.get("spec") {
            Some(s) => self.spec(s),
            None => Some(Spec::default()),
        };
        let meta = meta?;
        let name_node = self.required(&meta, "metadata", "name");
        let name = name_node.and_then(|n| self.name(n));
        let owner = self.required(&meta, "metadata", "owner").and_then(|n| {
            match self.string(n, "metadata.owner") {
                Some(s) if s.trim().is_empty() => {
                    self.at(n, "metadata.owner", "owner must not be empty");
                    None
                }
                s => s,
            }
        });
        let description = meta
            .get("description")
            .and_then(|n| self.string(n, "metadata.description"));
        let (name, name_node) = (name?, name_node?);
        let spec = spec.unwrap_or_default();
        Some(Identity {
            location: self.location(name_node),
            name,
            owner: owner.unwrap_or_default(),
            description,
            spiffe_id: spec.spiffe_id,
            mode: spec.mode,
            selectors: spec.selectors,
            exe_selectors: spec.exe_selectors,
            principal_selectors: spec.principal_selectors,
            egress: spec.egress,
            exec_allow: spec.exec_allow,
        })
    }

    fn name(&mut self, n: &Node) -> Option<String> {
        const FIELD: &str = "metadata.name";
        let s = self.string(n, FIELD)?;
        let valid = (1..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            self.at(
                n,
                FIELD,
                format!("invalid name `{s}`: must match [a-z0-9-]{{1,63}}"),
            );
            return None;
        }
        if s == RESERVED_NAME || s == QUARANTINE_NAME {
            self.at(
                n,
                FIELD,
                format!(
                    "the name `{s}` is reserved (the metrics label of {})",
                    if s == RESERVED_NAME {
                        "unenrolled tasks"
                    } else {
                        "quarantined tasks"
                    }
                ),
            );
            return None;
        }
        Some(s)
    }

    fn spec(&mut self, node: &Node) -> Option<Spec> {
        let f = self.fields(
            node,
            "spec",
            &["spiffeId", "mode", "selectors", "egress", "exec"],
        )?;
        let mut spec = Spec::default();
        if let Some(n) = f.get("spiffeId") {
            spec.spiffe_id = self.spiffe_id(n);
        }
        if let Some(n) = f.get("mode")
            && let Some(s) = self.string(n, "spec.mode")
        {
            match s.as_str() {
                "enforce" => spec.mode = Mode::Enforce,
                "audit" => spec.mode = Mode::Audit,
                _ => self.at(
                    n,
                    "spec.mode",
                    format!("invalid mode `{s}`, expected enforce or audit"),
                ),
            }
        }
        if let Some(n) = f.get("selectors")
            && let Some(items) = self.list(n, "spec.selectors")
        {
            for (i, item) in items.iter().enumerate() {
                match self.selector(item, &index("spec.selectors", i)) {
                    Some(Selector::Cgroup(s)) => spec.selectors.push(s),
                    Some(Selector::Exe(s)) => spec.exe_selectors.push(s),
                    Some(Selector::Principal(s)) => spec.principal_selectors.push(s),
                    None => {}
                }
            }
        }
        if let Some(n) = f.get("egress")
            && let Some(items) = self.list(n, "spec.egress")
        {
            for (i, item) in items.iter().enumerate() {
                if let Some(rule) = self.rule(item, &index("spec.egress", i)) {
                    spec.egress.push(rule);
                }
            }
        }
        if let Some(n) = f.get("exec") {
            spec.exec_allow = self.exec(n);
        }
        Some(spec)
    }

    fn spiffe_id(&mut self, n: &Node) -> Option<String> {
        const FIELD: &str = "spec.spiffeId";
        let s = self.string(n, FIELD)?;
        let Some(rest) = s.strip_prefix("spiffe://") else {
            self.at(
                n,
                FIELD,
                format!("invalid SPIFFE id `{s}`: must start with spiffe://"),
            );
            return None;
        };
        let domain = rest.split('/').next().unwrap_or_default();
        let domain_ok = !domain.is_empty()
            && domain.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        let path_ok = !rest.contains("//")
            && !rest.ends_with('/')
            && rest.bytes().all(|b| b.is_ascii_graphic());
        if !domain_ok || !path_ok {
            self.at(
                n,
                FIELD,
                format!(
                    "invalid SPIFFE id `{s}`: expected spiffe://TRUST-DOMAIN/PATH with a lowercase trust domain"
                ),
            );
            return None;
        }
        Some(s)
    }

    fn selector(&mut self, node: &Node, path: &str) -> Option<Selector> {
        let f = self.fields(node, path, &["cgroup", "exe", "sha256", "uid", "gid"])?;
        if let Some(n) = f.get("cgroup") {
            let mut ok = true;
            for other in ["exe", "sha256", "uid", "gid"] {
                if let Some(k) = f.key(other) {
                    // A cgroup is its own kind of selector; combining would need the
                    // kernel to check both at every enrollment point.
                    self.at(
                        k,
                        &join(path, other),
                        format!(
                            "`{other}` cannot be combined with `cgroup` in one selector; write a separate selector"
                        ),
                    );
                    ok = false;
                }
            }
            let field = join(path, "cgroup");
            let glob = self.string(n, &field)?;
            if let Err(why) = check_cgroup_glob(&glob) {
                self.at(n, &field, format!("invalid cgroup glob `{glob}`: {why}"));
                return None;
            }
            return ok.then(|| {
                Selector::Cgroup(CgroupSelector {
                    glob,
                    location: self.location(n),
                })
            });
        }
        let mut ok = true;
        let uid = f.get("uid").and_then(|n| {
            let v = self.principal_id(n, &join(path, "uid"));
            ok &= v.is_some();
            v
        });
        let gid = f.get("gid").and_then(|n| {
            let v = self.principal_id(n, &join(path, "gid"));
            ok &= v.is_some();
            v
        });
        let sha256 = f.get("sha256").and_then(|n| {
            let v = self.digest(n, &join(path, "sha256"));
            ok &= v.is_some();
            v
        });
        let Some(n) = f.get("exe") else {
            if let Some(k) = f.key("sha256") {
                self.at(
                    k,
                    &join(path, "sha256"),
                    "`sha256` needs `exe`: the kernel matches files, the digest pins their content",
                );
                return None;
            }
            if uid.is_none() && gid.is_none() {
                if ok {
                    self.error(
                        f.line,
                        f.column,
                        path,
                        "a selector needs one of `cgroup`, `exe`, `uid` or `gid`",
                    );
                }
                return None;
            }
            return ok.then(|| {
                Selector::Principal(PrincipalSelector {
                    uid,
                    gid,
                    location: self.location(node),
                })
            });
        };
        let field = join(path, "exe");
        let exe = self.absolute_path(n, &field)?;
        ok.then(|| {
            Selector::Exe(ExeSelector {
                path: exe,
                sha256,
                uid,
                gid,
                location: self.location(n),
            })
        })
    }

    /// A numeric uid or gid. 0 is refused: it would enroll every root process on the
    /// host, the agent itself included.
    fn principal_id(&mut self, n: &Node, field: &str) -> Option<u32> {
        let parsed = match (&n.kind, n.scalar_type()) {
            (Kind::Scalar { text, .. }, Some(ScalarType::Int)) => text.parse::<u32>().ok(),
            _ => {
                self.type_error(n, field, "a numeric id");
                return None;
            }
        };
        match parsed {
            Some(0) => {
                self.at(
                    n,
                    field,
                    "id 0 (root) cannot be a selector: it would enroll every root process on the host, zt-agent included; select root services by `exe` or `cgroup`",
                );
                None
            }
            Some(v) if v != zt_agent_common::ANY_ID => Some(v),
            _ => {
                self.at(
                    n,
                    field,
                    "invalid id: expected an integer from 1 to 4294967294",
                );
                None
            }
        }
    }

    fn digest(&mut self, n: &Node, field: &str) -> Option<String> {
        // An all-digit digest is a plain YAML integer; its text is still the digest.
        let s = match (&n.kind, n.scalar_type()) {
            (Kind::Scalar { text, .. }, Some(ScalarType::Int | ScalarType::Float)) => text.clone(),
            _ => self.string(n, field)?,
        };
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(s.to_ascii_lowercase());
        }
        self.at(
            n,
            field,
            format!("invalid sha256 `{s}`: expected 64 hex digits (`sha256sum FILE` prints it)"),
        );
        None
    }

    /// An absolute, normalised file path: no `.` or `..` components, no empty ones.
    fn absolute_path(&mut self, n: &Node, field: &str) -> Option<String> {
        let s = self.string(n, field)?;
        let clean = s.starts_with('/')
            && s.len() > 1
            && !s.ends_with('/')
            && !s.contains('\0')
            && s[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean {
            self.at(
                n,
                field,
                format!(
                    "invalid path `{s}`: expected an absolute file path without `.`, `..` or empty components"
                ),
            );
            return None;
        }
        Some(s)
    }

    /// `spec.exec`: `allow`, a list of absolute paths or `{path, sha256}` maps (empty:
    /// no exec at all).
    fn exec(&mut self, node: &Node) -> Option<Vec<ExecPath>> {
        let f = self.fields(node, "spec.exec", &["allow"])?;
        let n = self.required(&f, "spec.exec", "allow")?;
        let items = self.list(n, "spec.exec.allow")?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let field = index("spec.exec.allow", i);
            let (path, sha256) = if matches!(item.kind, Kind::Map(_)) {
                let Some(f) = self.fields(item, &field, &["path", "sha256"]) else {
                    ok = false;
                    continue;
                };
                let path = self
                    .required(&f, &field, "path")
                    .and_then(|n| self.absolute_path(n, &join(&field, "path")));
                let sha256 = match f.get("sha256") {
                    Some(n) => match self.digest(n, &join(&field, "sha256")) {
                        Some(d) => Some(d),
                        None => {
                            ok = false;
                            None
                        }
                    },
                    None => None,
                };
                (path, sha256)
            } else {
                (self.absolute_path(item, &field), None)
            };
            match path {
                Some(path) => {
                    if out.iter().any(|p: &ExecPath| p.path == path) {
                        self.at(item, &field, format!("`{path}` is listed twice"));
                        ok = false;
                    } else {
                        out.push(ExecPath {
                            path,
                            sha256,
                            location: self.location(item),
                        });
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn rule(&mut self, node: &Node, path: &str) -> Option<EgressRule> {
        let f = self.fields(node, path, &["to", "ports", "protocol"])?;
        let mut ok = true;
        let mut to = Vec::new();
        let mut names = Vec::new();
        if let Some(n) = self.required(&f, path, "to") {
            let field = join(path, "to");
            match self.list(n, &field) {
                Some([]) => {
                    self.at(
                        n,
                        &field,
                        "`to` must not be empty; remove the rule to allow nothing",
                    );
                    ok = false;
                }
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match self.target(item, &index(&field, i)) {
                            Some(Target::Net(net)) => to.push(net),
                            Some(Target::Name(name)) => names.push(name),
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        } else {
            ok = false;
        }
        let mut ports = Vec::new();
        match f.get("ports") {
            None => ports.push(ALL_PORTS),
            Some(n) => {
                let field = join(path, "ports");
                match self.list(n, &field) {
                    Some([]) => {
                        self.at(
                            n,
                            &field,
                            "`ports` must not be empty; omit it to allow all ports",
                        );
                        ok = false;
                    }
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            match self.port_range(item, &index(&field, i)) {
                                Some(r) => ports.push(r),
                                None => ok = false,
                            }
                        }
                    }
                    None => ok = false,
                }
            }
        }
        let mut protocol = Protocol::Any;
        if let Some(n) = f.get("protocol") {
            let field = join(path, "protocol");
            match self.string(n, &field).as_deref() {
                Some("tcp") => protocol = Protocol::Tcp,
                Some("udp") => protocol = Protocol::Udp,
                Some("any") => protocol = Protocol::Any,
                Some(s) => {
                    self.at(
                        n,
                        &field,
                        format!("invalid protocol `{s}`, expected tcp, udp or any"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then(|| EgressRule {
            to,
            names,
            ports,
            protocol,
            location: self.location(node),
        })
    }

    fn target(&mut self, node: &Node, field: &str) -> Option<Target> {
        // Plain `10` or `1.5` would be numbers; report those as what they are.
        let s = match (&node.kind, node.scalar_type()) {
            (
                Kind::Scalar { text, .. },
                Some(ScalarType::Str | ScalarType::Int | ScalarType::Float),
            ) => text.clone(),
            _ => {
                self.type_error(node, field, "an IP address, CIDR or DNS name string");
                return None;
            }
        };
        match parse_target(&s) {
            Ok(net) => Some(net),
            Err(msg) => {
                self.at(node, field, msg);
                None
            }
        }
    }

    fn port_range(&mut self, node: &Node, field: &str) -> Option<(u16, u16)> {
        let parsed = match (&node.kind, node.scalar_type()) {
            (Kind::Scalar { text, .. }, Some(ScalarType::Int)) => parse_port(text).map(|p| (p, p)),
            (Kind::Scalar { text, .. }, Some(ScalarType::Str)) => parse_port_str(text),
            _ => {
                self.type_error(node, field, "a port (1-65535) or a range string \"LO-HI\"");
                return None;
            }
        };
        match parsed {
            Ok(r) => Some(r),
            Err(msg) => {
                self.at(node, field, msg);
                None
            }
        }
    }
}

#[derive(Default)]
struct Spec {
    spiffe_id: Option<String>,
    mode: Mode,
    selectors: Vec<CgroupSelector>,
    exe_selectors: Vec<ExeSelector>,
    principal_selectors: Vec<PrincipalSelector>,
    egress: Vec<EgressRule>,
    exec_allow: Option<Vec<ExecPath>>,
}

enum Selector {
    Cgroup(CgroupSelector),
    Exe(ExeSelector),
    Principal(PrincipalSelector),
}

/// The closest allowed field name within two edits, for typos.
fn suggest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(&name.to_lowercase(), &a.to_lowercase()), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim_start_matches('+').parse::<u16>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(format!("invalid port `{s}`: must be an integer 1-65535")),
    }
}

fn parse_port_str(s: &str) -> Result<(u16, u16), String> {
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('-') {
        Some((lo, hi)) if digits(lo) && digits(hi) => {
            let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
            if lo > hi {
                return Err(format!(
                    "inverted port range `{s}`: {lo} is greater than {hi}"
                ));
            }
            Ok((lo, hi))
        }
        None if digits(s) => parse_port(s).map(|p| (p, p)),
        _ => Err(format!(
            "invalid port `{s}`: expected a port 1-65535 or a range \"LO-HI\""
        )),
    }
}

/// An `egress.to` entry: a CIDR or a single address, normalised, or a DNS name.
pub(super) fn parse_target(s: &str) -> Result<Target, String> {
    let looks_numeric =
        s.contains(':') || s.contains('/') || s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if looks_numeric {
        parse_net(s).map(Target::Net)
    } else {
        DnsName::parse(s).map(Target::Name)
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let net = if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| bad_target(s))?;
        if net.network() != net.addr() {
            let suggestion = normalise(net.trunc());
            return Err(format!("{s} has host bits set; did you mean {suggestion}?"));
        }
        net
    } else {
        let addr: IpAddr = s.parse().map_err(|_| bad_target(s))?;
        IpNet::from(addr)
    };
    Ok(normalise(net))
}

fn bad_target(s: &str) -> String {
    format!("invalid address or CIDR `{s}`")
}

/// IPv4-mapped IPv6 networks become IPv4: the kernel judges v4-mapped destinations as IPv4.
fn normalise(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let Some(v4) = to_mapped_v4(n.network())
        && let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

fn to_mapped_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    (s[..5] == [0; 5] && s[5] == 0xffff)
        .then(|| a.to_ipv4_mapped())
        .flatten()
}

/// Checks the glob syntax; overlaps between identities are checked in `validate`.
pub(super) fn check_cgroup_glob(glob: &str) -> Result<(), String> {
    if !glob.starts_with('/') {
        return Err("must be an absolute path below the cgroup2 mount, starting with `/`".into());
    }
    if glob.len() > 1 && glob.ends_with('/') {
        return Err("must not end with `/`".into());
    }
    let comps: Vec<&str> = glob[1..].split('/').collect();
    if comps.iter().all(|c| c.is_empty() || *c == "**") {
        return Err("must name at least one cgroup below the root".into());
    }
    // `/*`, `/*/**` and the like claim every top-level cgroup: init.scope (PID 1),
    // system.slice, user.slice. Name the top-level cgroup.
    if comps.first().is_some_and(|c| c.chars().all(|ch| ch == '*')) {
        return Err("the first component must name a cgroup, not only wildcards (it would claim the whole host)".into());
    }
    for c in &comps {
        if c.is_empty() {
            return Err("empty path component (`//`)".into());
        }
        if *c == "." || *c == ".." {
            return Err("`.` and `..` components are not allowed".into());
        }
        if c.contains("**") && *c != "**" {
            return Err("`**` must be a whole path component".into());
        }
        if c.contains(['?', '[', ']', '{', '}', '\\']) {
            return Err("only the wildcards `*` and `**` are supported".into());
        }
        if c.chars().any(char::is_control) {
            return Err("control characters are not allowed".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> (Vec<Node>, Vec<PolicyError>) {
        let mut errors = Vec::new();
        let d = parse_documents("t.yaml", text, &mut errors);
        (d, errors)
    }

    #[test]
    fn tree_positions_and_kinds() {
        let (d, e) = docs("a: 1\nb:\n  - x\n  - [y, 'z']\n---\n---\nc: {}\n");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(d.len(), 2);
        let Kind::Map(m) = &d[0].kind else {
            panic!("not a map")
        };
        assert_eq!((m[1].1.line, m[1].1.column), (3, 3));
        let Kind::Seq(items) = &m[1].1.kind else {
            panic!("not a seq")
        };
        assert!(matches!(items[1].kind, Kind::Seq(_)));
        assert_eq!((items[1].line, items[1].column), (4, 5));
        assert!(matches!(d[1].kind, Kind::Map(_)));
    }

    #[test]
    fn anchors_and_aliases_expand() {
        let (d, e) = docs("a: &x [1, 2]\nb: *x\nc: &m {k: v}\nd: *m\n");
        assert!(e.is_empty(), "{e:?}");
        let Kind::Map(m) = &d[0].kind else {
            panic!("not a map")
        };
        assert!(matches!(&m[1].1.kind, Kind::Seq(v) if v.len() == 2));
        assert!(matches!(&m[3].1.kind, Kind::Map(v) if v.len() == 1));
    }

    #[test]
    fn syntax_error_has_position() {
        let (_, e) = docs("a: [1, 2\nb: 3\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].message.starts_with("YAML syntax error"));
        assert!(e[0].line >= 1);
    }

    #[test]
    fn scalar_resolution() {
        assert_eq!(resolve_plain("443"), ScalarType::Int);
        assert_eq!(resolve_plain("-1"), ScalarType::Int);
        assert_eq!(resolve_plain("0x1f"), ScalarType::Int);
        assert_eq!(resolve_plain("1.5"), ScalarType::Float);
        assert_eq!(resolve_plain("1e3"), ScalarType::Float);
        assert_eq!(resolve_plain("10.0.0.1"), ScalarType::Str);
        assert_eq!(resolve_plain("8000-8100"), ScalarType::Str);
        assert_eq!(resolve_plain("~"), ScalarType::Null);
        assert_eq!(resolve_plain(""), ScalarType::Null);
        assert_eq!(resolve_plain("true"), ScalarType::Bool);
        assert_eq!(resolve_plain("yes"), ScalarType::Str);
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_net("10.0.0.0/8"),
            Ok("10.0.0.0/8".parse().expect("net"))
        );
        assert_eq!(
            parse_net("127.0.0.1"),
            Ok("127.0.0.1/32".parse().expect("net"))
        );
        assert_eq!(parse_net("::1"), Ok("::1/128".parse().expect("net")));
        assert_eq!(
            parse_net("::ffff:10.0.0.0/104"),
            Ok("10.0.0.0/8".parse().expect("net"))
        );
        assert_eq!(
            parse_net("::ffff:192.168.1.10"),
            Ok("192.168.1.10/32".parse().expect("net"))
        );
        assert_eq!(
            parse_net("::ffff:0:0/96"),
            Ok("0.0.0.0/0".parse().expect("net"))
        );
        // Below /96 the network is wider than the mapped range: stays IPv6.
        assert_eq!(parse_net("::/0"), Ok("::/0".parse().expect("net")));
        assert_eq!(
            parse_net("10.0.0.1/8"),
            Err("10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?".into())
        );
        assert_eq!(
            parse_target("API.openai.com"),
            Ok(Target::Name(
                DnsName::parse("api.openai.com").expect("name")
            ))
        );
        assert!(parse_target("*.githubusercontent.com").is_ok());
        assert!(parse_target("a.*.com").is_err_and(|e| e.contains("first label")));
        assert!(parse_net("10.0.0.0/33").is_err_and(|e| e.contains("invalid address")));
        assert!(parse_net("300.1.1.1").is_err_and(|e| e.contains("invalid address")));
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port_str("8000-8100"), Ok((8000, 8100)));
        assert_eq!(parse_port_str("443"), Ok((443, 443)));
        assert!(parse_port_str("9-1").is_err_and(|e| e.contains("inverted")));
        assert!(parse_port_str("0-10").is_err_and(|e| e.contains("1-65535")));
        assert!(parse_port_str("1-70000").is_err_and(|e| e.contains("1-65535")));
        assert!(parse_port_str("http").is_err());
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        assert!(parse_port("-5").is_err());
    }

    #[test]
    fn cgroup_globs() {
        assert!(check_cgroup_glob("/zt/coder/**").is_ok());
        assert!(check_cgroup_glob("/system.slice/telemetry.service").is_ok());
        assert!(check_cgroup_glob("/system.slice/tele*.service").is_ok());
        assert!(check_cgroup_glob("zt/coder").is_err());
        assert!(check_cgroup_glob("/zt//coder").is_err());
        assert!(check_cgroup_glob("/zt/../x").is_err());
        assert!(check_cgroup_glob("/zt/a**").is_err());
        assert!(check_cgroup_glob("/**").is_err());
        assert!(check_cgroup_glob("/").is_err());
        assert!(check_cgroup_glob("/zt/").is_err());
        assert!(check_cgroup_glob("/zt/a?").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("egres", &["egress", "mode"]), Some("egress"));
        assert_eq!(suggest("spiffeid", &["spiffeId", "mode"]), Some("spiffeId"));
        assert_eq!(suggest("zzzzzz", &["egress", "mode"]), None);
    }
}
