//! `spec.selectors`: cgroups, binaries, users and groups, containers, pods and systemd
//! units, with their globs and labels.

use std::collections::BTreeMap;

use super::{Decoder, Fields, Selector, is_label_value, join};
use crate::policy::model::{
    CgroupSelector, ContainerSelector, ExeSelector, PodSelector, PrincipalSelector, Runtime,
    UnitSelector,
};
use crate::policy::values::check_cgroup_glob;
use crate::policy::yaml::{Kind, Node, ScalarType};

impl Decoder<'_> {
    pub(super) fn selector(&mut self, node: &Node, path: &str) -> Option<Selector> {
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
    pub(super) fn container(&mut self, node: &Node, path: &str) -> Option<ContainerSelector> {
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
    pub(super) fn pod(&mut self, node: &Node, path: &str) -> Option<PodSelector> {
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
    pub(super) fn unit(&mut self, n: &Node, field: &str) -> Option<UnitSelector> {
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
    pub(super) fn glob_field(
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
    pub(super) fn labels(
        &mut self,
        f: &Fields<'_>,
        path: &str,
        ok: &mut bool,
    ) -> BTreeMap<String, String> {
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
    pub(super) fn principal_id(&mut self, n: &Node, field: &str) -> Option<u32> {
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
}
