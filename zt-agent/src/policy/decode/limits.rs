//! `spec.limits`: upload caps per window, for the identity or per destination.

use super::{Decoder, index, join};
use crate::policy::model::{Limit, LimitScope};
use crate::policy::values::{format_duration, parse_bytes};
use crate::policy::yaml::{Kind, Node, ScalarType};

/// The shortest window a limit may have: the daemon reads the counters once a second.
const MIN_WINDOW_SECS: u64 = 10;
/// The longest: what the daemon keeps in memory per flow.
const MAX_WINDOW_SECS: u64 = 30 * 86_400;

impl Decoder<'_> {
    /// `spec.limits`: one `{uploadBytes, per, scope}`, or a list of them.
    pub(super) fn limits(&mut self, node: &Node) -> Option<Vec<Limit>> {
        const FIELD: &str = "spec.limits";
        if matches!(node.kind, Kind::Map(_)) {
            return self.limit(node, FIELD).map(|l| vec![l]);
        }
        let items = self.list(node, FIELD)?;
        let mut out: Vec<Limit> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index(FIELD, i);
            let Some(l) = self.limit(item, &path) else {
                ok = false;
                continue;
            };
            if out
                .iter()
                .any(|o| o.scope == l.scope && o.per_secs == l.per_secs)
            {
                self.at(
                    item,
                    &path,
                    format!(
                        "a second {} limit per {}: give each window one cap",
                        l.scope.as_str(),
                        format_duration(l.per_secs)
                    ),
                );
                ok = false;
                continue;
            }
            out.push(l);
        }
        ok.then_some(out)
    }

    fn limit(&mut self, node: &Node, path: &str) -> Option<Limit> {
        let f = self.fields(node, path, &["uploadBytes", "per", "scope"])?;
        let Some(bytes_node) = f.get("uploadBytes") else {
            self.at(
                node,
                &join(path, "uploadBytes"),
                "missing field `uploadBytes`",
            );
            return None;
        };
        let Some(per_node) = f.get("per") else {
            self.at(
                node,
                &join(path, "per"),
                "missing field `per`, the window (like 1h)",
            );
            return None;
        };
        let field = join(path, "uploadBytes");
        let upload_bytes = match &bytes_node.kind {
            Kind::Scalar { text, .. }
                if matches!(
                    bytes_node.scalar_type(),
                    Some(ScalarType::Str | ScalarType::Int)
                ) =>
            {
                match parse_bytes(text) {
                    Ok(n) => n,
                    Err(msg) => {
                        self.at(bytes_node, &field, msg);
                        return None;
                    }
                }
            }
            _ => {
                self.type_error(bytes_node, &field, "a size like 100MiB");
                return None;
            }
        };
        let field = join(path, "per");
        let per_secs = self.duration(per_node, &field)?;
        if !(MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&per_secs) {
            self.at(
                per_node,
                &field,
                format!(
                    "window {} is out of range: from {} to {}",
                    format_duration(per_secs),
                    format_duration(MIN_WINDOW_SECS),
                    format_duration(MAX_WINDOW_SECS)
                ),
            );
            return None;
        }
        let mut scope = LimitScope::Identity;
        if let Some(n) = f.get("scope") {
            let field = join(path, "scope");
            match self.string(n, &field)?.as_str() {
                "identity" => {}
                "destination" => scope = LimitScope::Destination,
                s => {
                    self.at(
                        n,
                        &field,
                        format!("invalid scope `{s}`, expected identity or destination"),
                    );
                    return None;
                }
            }
        }
        Some(Limit {
            upload_bytes,
            per_secs,
            scope,
        })
    }
}
