//! Files the policy names: digests, absolute paths and `spec.exec.allow`.

use super::{Decoder, index, join};
use crate::policy::model::ExecPath;
use crate::policy::yaml::{Kind, Node, ScalarType};

impl Decoder<'_> {
    pub(super) fn digest(&mut self, n: &Node, field: &str) -> Option<String> {
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
    pub(super) fn absolute_path(&mut self, n: &Node, field: &str) -> Option<String> {
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
    pub(super) fn exec(&mut self, node: &Node) -> Option<Vec<ExecPath>> {
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
}
