//! Checks across documents and files: unique names, no two identities claiming a cgroup,
//! a binary, a uid or a gid.

use std::collections::BTreeMap;

use super::PolicyError;
use super::model::{
    ContainerSelector, Identity, Location, PodSelector, component_matches, components,
    launch_cgroup_glob,
};

/// Appends an error for every duplicate name and every overlapping pair of cgroup globs.
/// `identities` are in source order (files sorted by name, documents in file order), so
/// errors point at the later definition and name the earlier one.
pub(super) fn cross_check(identities: &[Identity], errors: &mut Vec<PolicyError>) {
    duplicate_names(identities, errors);
    overlapping_cgroups(identities, errors);
    overlapping_exes(identities, errors);
    overlapping_principals(identities, errors);
    overlapping_workloads(identities, errors);
}

/// Two identities claiming one systemd unit, or container or pod selectors of two
/// identities that some container could match both. (Across kinds, precedence
/// decides: see `plan::cgroups`.)
fn overlapping_workloads(identities: &[Identity], errors: &mut Vec<PolicyError>) {
    let mut units: Vec<(&str, &str, &Location)> = Vec::new();
    let mut containers: Vec<(&str, &ContainerSelector)> = Vec::new();
    let mut pods: Vec<(&str, &PodSelector)> = Vec::new();
    for id in identities {
        for (i, s) in id.unit_selectors.iter().enumerate() {
            if let Some((other, _, at)) =
                units.iter().find(|(o, u, _)| *u == s.unit && *o != id.name)
            {
                errors.push(error(
                    &s.location,
                    &format!("spec.selectors[{}].systemdUnit", selector_index(id, i, Kind::Unit)),
                    format!(
                        "systemdUnit `{}` of identity `{}` is also selected by identity `{other}` ({at})",
                        s.unit, id.name
                    ),
                ));
            }
            units.push((&id.name, &s.unit, &s.location));
        }
        for (i, s) in id.container_selectors.iter().enumerate() {
            if let Some((other, o)) = containers
                .iter()
                .find(|(o, c)| *o != id.name && containers_may_overlap(c, s))
            {
                errors.push(error(
                    &s.location,
                    &format!("spec.selectors[{}].container", selector_index(id, i, Kind::Container)),
                    format!(
                        "container selector of identity `{}` overlaps the container selector of identity `{other}` ({}): one container can have one identity; tell them apart by name, image or a label with different values",
                        id.name, o.location
                    ),
                ));
            }
            containers.push((&id.name, s));
        }
        for (i, s) in id.pod_selectors.iter().enumerate() {
            if let Some((other, o)) = pods
                .iter()
                .find(|(o, p)| *o != id.name && pods_may_overlap(p, s))
            {
                errors.push(error(
                    &s.location,
                    &format!("spec.selectors[{}].pod", selector_index(id, i, Kind::Pod)),
                    format!(
                        "pod selector of identity `{}` overlaps the pod selector of identity `{other}` ({}): tell them apart by namespace, container or a label with different values",
                        id.name, o.location
                    ),
                ));
            }
            pods.push((&id.name, s));
        }
    }
}

/// Two optional globs: an omitted one matches everything.
fn optional_globs_may_overlap(a: Option<&String>, b: Option<&String>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => components_may_overlap(x, y),
        _ => true,
    }
}

/// Label sets that one object could carry both: no label with two different values.
fn labels_compatible(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

/// Conservative, as for cgroup globs: may say yes for disjoint selectors, never no for
/// overlapping ones.
pub(super) fn containers_may_overlap(a: &ContainerSelector, b: &ContainerSelector) -> bool {
    (a.runtime.admits(b.runtime) || b.runtime.admits(a.runtime))
        && optional_globs_may_overlap(a.name.as_ref(), b.name.as_ref())
        && optional_globs_may_overlap(a.image.as_ref(), b.image.as_ref())
        && labels_compatible(&a.labels, &b.labels)
}

pub(super) fn pods_may_overlap(a: &PodSelector, b: &PodSelector) -> bool {
    optional_globs_may_overlap(a.namespace.as_ref(), b.namespace.as_ref())
        && (a.container.is_none() || b.container.is_none() || a.container == b.container)
        && labels_compatible(&a.labels, &b.labels)
}

/// Two `exe` selectors naming the same path. (Two paths of one file, hardlinks, are
/// found when the daemon resolves them: see `identity::files`.)
fn overlapping_exes(identities: &[Identity], errors: &mut Vec<PolicyError>) {
    let mut seen: Vec<(&str, &str, usize, &Location)> = Vec::new();
    for id in identities {
        for (i, s) in id.exe_selectors.iter().enumerate() {
            if let Some((other, _, _, at)) = seen.iter().find(|(_, p, _, _)| *p == s.path) {
                errors.push(error(
                    &s.location,
                    &format!("spec.selectors[{}].exe", selector_index(id, i, Kind::Exe)),
                    format!(
                        "exe selector `{}` of identity `{}` overlaps the exe selector of identity `{other}` ({at}): one file can select one identity",
                        s.path, id.name
                    ),
                ));
            } else {
                seen.push((&id.name, &s.path, i, &s.location));
            }
        }
    }
}

/// Two uid selectors with the same uid, or two gid-only selectors with the same gid.
fn overlapping_principals(identities: &[Identity], errors: &mut Vec<PolicyError>) {
    /// (uid, gid-only) key, identity, where.
    type Seen<'a> = ((Option<u32>, Option<u32>), &'a str, &'a Location);
    let mut seen: Vec<Seen<'_>> = Vec::new();
    for id in identities {
        for (i, s) in id.principal_selectors.iter().enumerate() {
            // A uid selector is keyed by its uid; a gid-only one by its gid.
            let key = match s.uid {
                Some(u) => (Some(u), None),
                None => (None, s.gid),
            };
            if let Some((_, other, at)) = seen.iter().find(|(k, _, _)| *k == key) {
                let (what, field) = match key {
                    (Some(u), _) => (format!("uid {u}"), "uid"),
                    (None, g) => (format!("gid {}", g.unwrap_or_default()), "gid"),
                };
                errors.push(error(
                    &s.location,
                    &format!(
                        "spec.selectors[{}].{field}",
                        selector_index(id, i, Kind::Principal)
                    ),
                    format!(
                        "{what} selector of identity `{}` overlaps the {what} selector of identity `{other}` ({at})",
                        id.name
                    ),
                ));
            } else {
                seen.push((key, &id.name, &s.location));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cgroup,
    Exe,
    Principal,
    Container,
    Pod,
    Unit,
}

/// Position of the `i`-th selector of one kind in `spec.selectors`, as written: the
/// locations are in source order, so count the selectors written before it.
fn selector_index(id: &Identity, i: usize, kind: Kind) -> usize {
    let at = match kind {
        Kind::Cgroup => &id.selectors[i].location,
        Kind::Exe => &id.exe_selectors[i].location,
        Kind::Principal => &id.principal_selectors[i].location,
        Kind::Container => &id.container_selectors[i].location,
        Kind::Pod => &id.pod_selectors[i].location,
        Kind::Unit => &id.unit_selectors[i].location,
    };
    let before = |l: &Location| usize::from(l < at);
    id.selectors
        .iter()
        .map(|s| before(&s.location))
        .sum::<usize>()
        + id.exe_selectors
            .iter()
            .map(|s| before(&s.location))
            .sum::<usize>()
        + id.principal_selectors
            .iter()
            .map(|s| before(&s.location))
            .sum::<usize>()
        + id.container_selectors
            .iter()
            .map(|s| before(&s.location))
            .sum::<usize>()
        + id.pod_selectors
            .iter()
            .map(|s| before(&s.location))
            .sum::<usize>()
        + id.unit_selectors
            .iter()
            .map(|s| before(&s.location))
            .sum::<usize>()
}

fn error(at: &Location, field: &str, message: String) -> PolicyError {
    PolicyError {
        file: at.file.clone(),
        line: at.line,
        column: at.column,
        field: field.to_owned(),
        message,
    }
}

fn duplicate_names(identities: &[Identity], errors: &mut Vec<PolicyError>) {
    for (i, id) in identities.iter().enumerate() {
        if let Some(first) = identities[..i].iter().find(|o| o.name == id.name) {
            errors.push(error(
                &id.location,
                "metadata.name",
                format!(
                    "duplicate identity `{}`: already defined at {}",
                    id.name, first.location
                ),
            ));
        }
    }
}

/// One glob an identity claims: an explicit selector, or its implicit launch cgroup.
struct Claim<'a> {
    identity: &'a str,
    glob: String,
    /// Index of the selector in `spec.selectors`; `None` for the implicit launch glob.
    selector: Option<usize>,
    location: &'a Location,
}

impl Claim<'_> {
    fn describe(&self) -> String {
        match self.selector {
            Some(_) => format!(
                "cgroup selector `{}` of identity `{}` ({})",
                self.glob, self.identity, self.location
            ),
            None => format!(
                "launch cgroup `{}` of identity `{}` ({})",
                self.glob, self.identity, self.location
            ),
        }
    }
}

fn overlapping_cgroups(identities: &[Identity], errors: &mut Vec<PolicyError>) {
    let mut claims = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for id in identities {
        // A duplicate name is already an error; its claims would only repeat reports.
        if !seen.insert(id.name.as_str()) {
            continue;
        }
        claims.push(Claim {
            identity: &id.name,
            glob: launch_cgroup_glob(&id.name),
            selector: None,
            location: &id.location,
        });
        for (i, s) in id.selectors.iter().enumerate() {
            claims.push(Claim {
                identity: &id.name,
                glob: s.glob.clone(),
                selector: Some(selector_index(id, i, Kind::Cgroup)),
                location: &s.location,
            });
        }
    }
    for (j, b) in claims.iter().enumerate() {
        for a in &claims[..j] {
            // Two launch globs never overlap (names are distinct); duplicates are
            // reported by name already.
            if a.identity == b.identity || (a.selector.is_none() && b.selector.is_none()) {
                continue;
            }
            if !globs_may_overlap(&a.glob, &b.glob) {
                continue;
            }
            // Report at the explicit selector, which is what the author has to change.
            let (at, other) = match b.selector {
                Some(_) => (b, a),
                None => (a, b),
            };
            let field = format!("spec.selectors[{}].cgroup", at.selector.unwrap_or_default());
            errors.push(error(
                at.location,
                &field,
                format!(
                    "cgroup selector `{}` of identity `{}` overlaps the {}",
                    at.glob,
                    at.identity,
                    other.describe()
                ),
            ));
        }
    }
}

/// Whether some cgroup path could match both globs. Conservative: may say yes for globs
/// that are in fact disjoint (e.g. `/a/**/x` and `/a/**/y`), never no for overlapping ones.
pub(super) fn globs_may_overlap(a: &str, b: &str) -> bool {
    overlap(&components(a), &components(b))
}

fn overlap(a: &[&str], b: &[&str]) -> bool {
    match (a.split_first(), b.split_first()) {
        // `**` can absorb any remainder of the other glob, including nothing.
        (Some((&"**", _)), _) | (_, Some((&"**", _))) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((x, ra)), Some((y, rb))) => components_may_overlap(x, y) && overlap(ra, rb),
    }
}

/// Whether one path component could match both component globs (`*` within a component).
fn components_may_overlap(x: &str, y: &str) -> bool {
    match (x.contains('*'), y.contains('*')) {
        (false, false) => x == y,
        (true, false) => component_matches(x, y),
        (false, true) => component_matches(y, x),
        (true, true) => {
            // Compare the literal text before the first and after the last `*`.
            let (xp, xs) = literal_ends(x);
            let (yp, ys) = literal_ends(y);
            (xp.starts_with(yp) || yp.starts_with(xp)) && (xs.ends_with(ys) || ys.ends_with(xs))
        }
    }
}

fn literal_ends(c: &str) -> (&str, &str) {
    let first = c.find('*').unwrap_or(c.len());
    let last = c.rfind('*').map_or(c.len(), |i| i + 1);
    (&c[..first], &c[last..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_decisions() {
        assert!(globs_may_overlap("/zt/coder/**", "/zt/coder/**"));
        assert!(globs_may_overlap("/zt/**", "/zt/coder/**"));
        assert!(globs_may_overlap("/zt/coder", "/zt/coder/**"));
        assert!(globs_may_overlap("/zt/coder/x", "/zt/*/x"));
        assert!(globs_may_overlap("/zt/c*/**", "/zt/coder/**"));
        assert!(globs_may_overlap("/a/x*", "/a/*y"));
        assert!(!globs_may_overlap("/zt/coder/**", "/zt/telemetry/**"));
        assert!(!globs_may_overlap("/zt/coder", "/zt/coder/x"));
        assert!(!globs_may_overlap("/a/b", "/a/c"));
        assert!(!globs_may_overlap("/a/x*", "/a/y*"));
        assert!(!globs_may_overlap("/a/*.service", "/a/*.scope"));
        assert!(!globs_may_overlap(
            "/system.slice/telemetry.service",
            "/zt/telemetry/**"
        ));
        assert!(!globs_may_overlap("/a/*/c", "/a/b"));
    }
}
