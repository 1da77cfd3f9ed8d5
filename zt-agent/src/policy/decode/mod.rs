//! The strict schema of one `Identity` document, decoded from the YAML tree.
//!
//! Every problem is collected rather than the first returned, each with file:line:column
//! and the dotted path of its field.

use super::PolicyError;

use super::model::{
    API_VERSION, CgroupSelector, ContainerSelector, EgressRule, ExeSelector, ExecPath,
    GrantSettings, Identity, IngressRule, KIND_IDENTITY, Limit, Location, Mode, PodSelector,
    PrincipalSelector, QUARANTINE_NAME, RESERVED_NAME, UnitSelector,
};
use super::values::format_duration;
use super::yaml::{Kind, Node, ScalarType};

mod files;
mod grants;
mod limits;
mod rules;
mod selectors;

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
            container_selectors: spec.container_selectors,
            pod_selectors: spec.pod_selectors,
            unit_selectors: spec.unit_selectors,
            egress: spec.egress,
            ingress: spec.ingress,
            exec_allow: spec.exec_allow,
            grants: spec.grants,
            limits: spec.limits,
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
            &[
                "spiffeId",
                "mode",
                "selectors",
                "egress",
                "ingress",
                "exec",
                "grants",
                "limits",
            ],
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
                    Some(Selector::Container(s)) => spec.container_selectors.push(s),
                    Some(Selector::Pod(s)) => spec.pod_selectors.push(s),
                    Some(Selector::Unit(s)) => spec.unit_selectors.push(s),
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
        if let Some(n) = f.get("ingress")
            && let Some(items) = self.list(n, "spec.ingress")
        {
            for (i, item) in items.iter().enumerate() {
                if let Some(rule) = self.ingress_rule(item, &index("spec.ingress", i)) {
                    spec.ingress.push(rule);
                }
            }
        }
        if let Some(n) = f.get("exec") {
            spec.exec_allow = self.exec(n);
        }
        if let Some(n) = f.get("grants")
            && let Some(g) = self.grants(n)
        {
            spec.grants = g;
        }
        if let Some(n) = f.get("limits")
            && let Some(l) = self.limits(n)
        {
            spec.limits = l;
        }
        // A rule's approvals may not outlast the identity's ceiling.
        let ceiling = spec.grants.max_duration;
        if let Some(Kind::Seq(items)) = f.get("egress").map(|n| &n.kind) {
            for (i, item) in items.iter().enumerate() {
                let Some(rule) = spec
                    .egress
                    .iter()
                    .find(|r| (r.location.line, r.location.column) == (item.line, item.column))
                else {
                    continue;
                };
                if let Some(max) = rule.max_grant
                    && max > ceiling
                {
                    self.at(
                        item,
                        &format!("spec.egress[{i}].maxGrant"),
                        format!(
                            "maxGrant {} is longer than spec.grants.maxDuration {}, the ceiling of every grant to this identity",
                            format_duration(max),
                            format_duration(ceiling)
                        ),
                    );
                }
            }
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
}

#[derive(Default)]
struct Spec {
    spiffe_id: Option<String>,
    mode: Mode,
    selectors: Vec<CgroupSelector>,
    exe_selectors: Vec<ExeSelector>,
    principal_selectors: Vec<PrincipalSelector>,
    container_selectors: Vec<ContainerSelector>,
    pod_selectors: Vec<PodSelector>,
    unit_selectors: Vec<UnitSelector>,
    egress: Vec<EgressRule>,
    ingress: Vec<IngressRule>,
    exec_allow: Option<Vec<ExecPath>>,
    grants: GrantSettings,
    limits: Vec<Limit>,
}

enum Selector {
    Cgroup(CgroupSelector),
    Exe(ExeSelector),
    Principal(PrincipalSelector),
    Container(ContainerSelector),
    Pod(PodSelector),
    Unit(UnitSelector),
}

/// A label value or a container name as runtimes store them: printable, no control
/// characters.
fn is_label_value(s: &str) -> bool {
    s.len() <= 4096 && !s.chars().any(char::is_control)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("egres", &["egress", "mode"]), Some("egress"));
        assert_eq!(suggest("spiffeid", &["spiffeId", "mode"]), Some("spiffeId"));
        assert_eq!(suggest("zzzzzz", &["egress", "mode"]), None);
    }
}
