//! The strict schema of one `Identity` document, decoded from the YAML tree.
//!
//! Every problem is collected rather than the first returned, each with file:line:column
//! and the dotted path of its field.

use super::PolicyError;
use std::collections::BTreeMap;

use super::model::{
    ALL_DAYS, ALL_PORTS, API_VERSION, Access, CgroupSelector, ContainerSelector, DAY_NAMES,
    EgressRule, ExeSelector, ExecPath, GrantSettings, Identity, IngressRule, KIND_IDENTITY,
    Location, MAX_GRANT_CEILING_SECS, Mode, PodSelector, PrincipalSelector, Protocol,
    QUARANTINE_NAME, RESERVED_NAME, Runtime, Target, UnitSelector, Window,
};
use super::values::{
    check_cgroup_glob, check_timezone, format_duration, parse_duration, parse_hours, parse_port,
    parse_port_str, parse_target,
};
use super::yaml::{Kind, Node, ScalarType};

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

    /// `spec.grants`: `maxDuration`, the ceiling of every grant (default 1h, at most 7d).
    fn grants(&mut self, node: &Node) -> Option<GrantSettings> {
        let f = self.fields(node, "spec.grants", &["maxDuration"])?;
        let mut g = GrantSettings::default();
        if let Some(n) = f.get("maxDuration") {
            const FIELD: &str = "spec.grants.maxDuration";
            let secs = self.duration(n, FIELD)?;
            if secs > MAX_GRANT_CEILING_SECS {
                self.at(
                    n,
                    FIELD,
                    format!(
                        "maxDuration {} is over the limit of 7d",
                        format_duration(secs)
                    ),
                );
                return None;
            }
            g.max_duration = secs;
        }
        Some(g)
    }

    fn duration(&mut self, n: &Node, field: &str) -> Option<u64> {
        let s = self.string(n, field)?;
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.at(n, field, msg);
                None
            }
        }
    }

    /// `egress[].when`: a non-empty list of `{days, hours, timezone}`.
    fn windows(&mut self, node: &Node, field: &str) -> Option<Vec<Window>> {
        let items = self.list(node, field)?;
        if items.is_empty() {
            self.at(
                node,
                field,
                "`when` must not be empty; omit it for a rule that is always open",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index(field, i);
            match self.window(item, &path) {
                Some(w) => out.push(w),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn window(&mut self, node: &Node, path: &str) -> Option<Window> {
        let f = self.fields(node, path, &["days", "hours", "timezone"])?;
        let mut ok = true;
        let mut days = ALL_DAYS;
        if let Some(n) = f.get("days") {
            let field = join(path, "days");
            match self.list(n, &field) {
                Some([]) => {
                    self.at(n, &field, "`days` must not be empty; omit it for every day");
                    ok = false;
                }
                Some(items) => {
                    days = 0;
                    for (i, item) in items.iter().enumerate() {
                        let f = index(&field, i);
                        let Some(name) = self.string(item, &f) else {
                            ok = false;
                            continue;
                        };
                        match DAY_NAMES.iter().position(|d| *d == name) {
                            Some(bit) if days & (1 << bit) != 0 => {
                                self.at(item, &f, format!("`{name}` is listed twice"));
                                ok = false;
                            }
                            Some(bit) => days |= 1 << bit,
                            None => {
                                self.at(
                                    item,
                                    &f,
                                    format!(
                                        "invalid day `{name}`, expected one of: {}",
                                        DAY_NAMES.join(", ")
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                None => ok = false,
            }
        }
        let (mut start, mut end) = (0, 86_400);
        if let Some(n) = f.get("hours") {
            let field = join(path, "hours");
            match self.string(n, &field) {
                Some(h) => match parse_hours(&h) {
                    Ok((a, b)) => (start, end) = (a, b),
                    Err(msg) => {
                        self.at(n, &field, msg);
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        let mut timezone = "UTC".to_owned();
        if let Some(n) = f.get("timezone") {
            let field = join(path, "timezone");
            match self.string(n, &field) {
                Some(tz) => match check_timezone(&tz) {
                    Ok(()) => timezone = tz,
                    Err(msg) => {
                        self.at(n, &field, msg);
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        ok.then(|| Window {
            days,
            start,
            end,
            timezone,
            location: self.location(node),
        })
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
        let f = self.fields(
            node,
            path,
            &[
                "cgroup",
                "exe",
                "sha256",
                "uid",
                "gid",
                "container",
                "pod",
                "systemdUnit",
            ],
        )?;
        for kind in ["container", "pod", "systemdUnit"] {
            let Some(n) = f.get(kind) else {
                continue;
            };
            let mut alone = true;
            for (other, k, _) in &f.entries {
                if *other != kind {
                    // Each resolves to cgroups by its own host facts; one selector
                    // is one kind, as with `cgroup`.
                    self.at(
                        k,
                        &join(path, other),
                        format!(
                            "`{other}` cannot be combined with `{kind}` in one selector; write a separate selector"
                        ),
                    );
                    alone = false;
                }
            }
            let field = join(path, kind);
            let selector = match kind {
                "container" => self.container(n, &field).map(Selector::Container),
                "pod" => self.pod(n, &field).map(Selector::Pod),
                _ => self.unit(n, &field).map(Selector::Unit),
            };
            return selector.filter(|_| alone);
        }
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
                        "a selector needs one of `cgroup`, `exe`, `uid`, `gid`, `container`, `pod` or `systemdUnit`",
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

    /// `container: {runtime, name, image, labels}`; at least one of name, image or
    /// labels, so that no selector claims every container of the host.
    fn container(&mut self, node: &Node, path: &str) -> Option<ContainerSelector> {
        let f = self.fields(node, path, &["runtime", "name", "image", "labels"])?;
        let mut ok = true;
        let mut runtime = Runtime::Any;
        if let Some(n) = f.get("runtime") {
            let field = join(path, "runtime");
            match self.string(n, &field).as_deref() {
                Some("docker") => runtime = Runtime::Docker,
                Some("podman") => runtime = Runtime::Podman,
                Some("containerd") => runtime = Runtime::Containerd,
                Some("any") => runtime = Runtime::Any,
                Some(s) => {
                    self.at(
                        n,
                        &field,
                        format!(
                            "invalid runtime `{s}`, expected docker, podman, containerd or any"
                        ),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        let name = self.glob_field(&f, path, "name", &mut ok);
        let image = self.glob_field(&f, path, "image", &mut ok);
        let labels = self.labels(&f, path, &mut ok);
        if ok && name.is_none() && image.is_none() && labels.is_empty() {
            self.error(
                f.line,
                f.column,
                path,
                "a container selector needs `name`, `image` or `labels` (it would claim every container of the host)",
            );
            return None;
        }
        ok.then(|| ContainerSelector {
            runtime,
            name,
            image,
            labels,
            location: self.location(node),
        })
    }

    /// `pod: {namespace, labels, container}`; at least a namespace or labels.
    fn pod(&mut self, node: &Node, path: &str) -> Option<PodSelector> {
        let f = self.fields(node, path, &["namespace", "labels", "container"])?;
        let mut ok = true;
        let namespace = self.glob_field(&f, path, "namespace", &mut ok);
        let labels = self.labels(&f, path, &mut ok);
        let container = f.get("container").and_then(|n| {
            let field = join(path, "container");
            let s = self.string(n, &field);
            match s {
                Some(s) if is_label_value(&s) && !s.is_empty() => Some(s),
                Some(s) => {
                    self.at(n, &field, format!("invalid container name `{s}`"));
                    ok = false;
                    None
                }
                None => {
                    ok = false;
                    None
                }
            }
        });
        if ok && namespace.is_none() && labels.is_empty() {
            self.error(
                f.line,
                f.column,
                path,
                "a pod selector needs `namespace` or `labels` (it would claim every pod of the node)",
            );
            return None;
        }
        ok.then(|| PodSelector {
            namespace,
            labels,
            container,
            location: self.location(node),
        })
    }

    /// `systemdUnit: NAME.service` (or `.scope`): a unit that has a cgroup of its own.
    fn unit(&mut self, n: &Node, field: &str) -> Option<UnitSelector> {
        let s = self.string(n, field)?;
        let stem = s
            .strip_suffix(".service")
            .or_else(|| s.strip_suffix(".scope"));
        let valid = stem.is_some_and(|stem| {
            !stem.is_empty()
                && s.len() <= 255
                && stem.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b':' | b'-' | b'_' | b'.' | b'@' | b'\\')
                })
        });
        if !valid {
            self.at(
                n,
                field,
                format!(
                    "invalid unit `{s}`: expected NAME.service or NAME.scope (a unit with a cgroup of its own)"
                ),
            );
            return None;
        }
        Some(UnitSelector {
            unit: s,
            location: self.location(n),
        })
    }

    /// An optional `*`-glob string field: no control characters, not empty.
    fn glob_field(
        &mut self,
        f: &Fields<'_>,
        path: &str,
        name: &str,
        ok: &mut bool,
    ) -> Option<String> {
        let n = f.get(name)?;
        let field = join(path, name);
        let Some(s) = self.string(n, &field) else {
            *ok = false;
            return None;
        };
        if s.is_empty() || s.chars().any(char::is_control) || s.chars().all(|c| c == '*') {
            self.at(
                n,
                &field,
                format!("invalid {name} `{s}`: expected a name, `*` matching any run of characters (not only `*`: omit the field)"),
            );
            *ok = false;
            return None;
        }
        Some(s)
    }

    /// `labels: {KEY: VALUE}`: string keys and values, each matched exactly.
    fn labels(&mut self, f: &Fields<'_>, path: &str, ok: &mut bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(n) = f.get("labels") else {
            return out;
        };
        let field = join(path, "labels");
        let Kind::Map(entries) = &n.kind else {
            self.type_error(n, &field, "a map of label names to values");
            *ok = false;
            return out;
        };
        for (k, v) in entries {
            let key = match (&k.kind, k.scalar_type()) {
                (Kind::Scalar { text, .. }, Some(ScalarType::Str)) if !text.is_empty() => {
                    text.clone()
                }
                _ => {
                    self.at(
                        k,
                        &field,
                        format!("label names must be strings, found {}", k.describe()),
                    );
                    *ok = false;
                    continue;
                }
            };
            let vfield = join(&field, &key);
            // `version: 2` or `enabled: true` are label values as written.
            let value = match (&v.kind, v.scalar_type()) {
                (Kind::Scalar { text, .. }, Some(_)) => text.clone(),
                _ => {
                    self.type_error(v, &vfield, "a string");
                    *ok = false;
                    continue;
                }
            };
            if !is_label_value(&value) {
                self.at(v, &vfield, format!("invalid label value `{value}`"));
                *ok = false;
                continue;
            }
            if out.insert(key.clone(), value).is_some() {
                self.at(k, &vfield, format!("label `{key}` is given twice"));
                *ok = false;
            }
        }
        out
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
        let f = self.fields(
            node,
            path,
            &["to", "ports", "protocol", "access", "maxGrant", "when"],
        )?;
        let mut ok = true;
        let mut to = Vec::new();
        let mut names = Vec::new();
        match self.targets(&f, path, "to") {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match self.target(item, &index(&join(path, "to"), i)) {
                        Some(Target::Net(net)) => to.push(net),
                        Some(Target::Name(name)) => names.push(name),
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
        let ports = self.ports(&f, path);
        let protocol = self.protocol(&f, path);
        let mut access = Access::Allow;
        if let Some(n) = f.get("access") {
            let field = join(path, "access");
            match self.string(n, &field).as_deref() {
                Some("allow") => access = Access::Allow,
                Some("ask") => access = Access::Ask,
                Some(s) => {
                    self.at(
                        n,
                        &field,
                        format!("invalid access `{s}`, expected allow or ask"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        let mut max_grant = None;
        if let Some(n) = f.get("maxGrant") {
            let field = join(path, "maxGrant");
            match self.duration(n, &field) {
                Some(d) if access == Access::Ask => max_grant = Some(d),
                Some(_) => {
                    let k = f.key("maxGrant").unwrap_or(n);
                    self.at(
                        k,
                        &field,
                        "`maxGrant` applies to rules with `access: ask` only",
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        let mut when = Vec::new();
        if let Some(n) = f.get("when") {
            let field = join(path, "when");
            if access == Access::Ask {
                let k = f.key("when").unwrap_or(n);
                self.at(
                    k,
                    &field,
                    "`when` cannot be combined with `access: ask`; write two rules",
                );
                ok = false;
            } else {
                match self.windows(n, &field) {
                    Some(w) => when = w,
                    None => ok = false,
                }
            }
        }
        let (Some(ports), Some(protocol)) = (ports, protocol) else {
            return None;
        };
        ok.then(|| EgressRule {
            to,
            names,
            ports,
            protocol,
            access,
            max_grant,
            when,
            location: self.location(node),
        })
    }

    /// One `spec.ingress` entry: `from` holds addresses and networks only, since the
    /// kernel judges a peer by the address its packets come from.
    fn ingress_rule(&mut self, node: &Node, path: &str) -> Option<IngressRule> {
        let f = self.fields(node, path, &["from", "ports", "protocol"])?;
        let mut ok = true;
        let mut from = Vec::new();
        match self.targets(&f, path, "from") {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let field = index(&join(path, "from"), i);
                    match self.target(item, &field) {
                        Some(Target::Net(net)) => from.push(net),
                        Some(Target::Name(name)) => {
                            self.at(
                                item,
                                &field,
                                format!(
                                    "`{name}` is a DNS name; `from` takes addresses and networks (CIDR), the peers' own addresses"
                                ),
                            );
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
        let ports = self.ports(&f, path);
        let protocol = self.protocol(&f, path);
        let (Some(ports), Some(protocol)) = (ports, protocol) else {
            return None;
        };
        ok.then(|| IngressRule {
            from,
            ports,
            protocol,
            location: self.location(node),
        })
    }

    /// The required, non-empty list of a rule's peers (`to` or `from`).
    fn targets<'n>(&mut self, f: &Fields<'n>, path: &str, name: &str) -> Option<&'n [Node]> {
        let n = self.required(f, path, name)?;
        let field = join(path, name);
        match self.list(n, &field)? {
            [] => {
                self.at(
                    n,
                    &field,
                    format!("`{name}` must not be empty; remove the rule to allow nothing"),
                );
                None
            }
            items => Some(items),
        }
    }

    /// A rule's `ports`: all of them when omitted.
    fn ports(&mut self, f: &Fields<'_>, path: &str) -> Option<Vec<(u16, u16)>> {
        let Some(n) = f.get("ports") else {
            return Some(vec![ALL_PORTS]);
        };
        let field = join(path, "ports");
        let items = self.list(n, &field)?;
        if items.is_empty() {
            self.at(
                n,
                &field,
                "`ports` must not be empty; omit it to allow all ports",
            );
            return None;
        }
        let mut ports = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.port_range(item, &index(&field, i)) {
                Some(r) => ports.push(r),
                None => ok = false,
            }
        }
        ok.then_some(ports)
    }

    /// A rule's `protocol`: any when omitted.
    fn protocol(&mut self, f: &Fields<'_>, path: &str) -> Option<Protocol> {
        let Some(n) = f.get("protocol") else {
            return Some(Protocol::Any);
        };
        let field = join(path, "protocol");
        match self.string(n, &field)?.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "any" => Some(Protocol::Any),
            s => {
                self.at(
                    n,
                    &field,
                    format!("invalid protocol `{s}`, expected tcp, udp or any"),
                );
                None
            }
        }
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
    container_selectors: Vec<ContainerSelector>,
    pod_selectors: Vec<PodSelector>,
    unit_selectors: Vec<UnitSelector>,
    egress: Vec<EgressRule>,
    ingress: Vec<IngressRule>,
    exec_allow: Option<Vec<ExecPath>>,
    grants: GrantSettings,
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
