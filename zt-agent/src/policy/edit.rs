//! Changing one identity's document in its policy file as a person would: new egress
//! rules after the existing ones, new exec entries after the existing ones, `mode:
//! audit` taken out; every other line, comments included, stays as written. What
//! `policy suggest` proposes, as text and as a diff.

use super::yaml::{Kind, Node, parse_documents};

/// What to change in the document of `identity`.
pub struct Edit<'a> {
    pub identity: &'a str,
    /// Egress rules, each as lines without indentation: `- to: [...]` and the lines
    /// after it indented by two (comment lines allowed before it).
    pub egress: &'a [Vec<String>],
    /// Files for `spec.exec.allow`, each with a comment line.
    pub exec: &'a [(String, String)],
    /// Take `mode: audit` out, so that the document enforces.
    pub enforce: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{file}: does not parse: {why}")]
    Parse { file: String, why: String },
    #[error("{file}: no document of identity `{identity}`")]
    NoIdentity { file: String, identity: String },
    #[error(
        "{file}:{line}:{column}: `{field}` is written in flow style with entries; write it as a block list for `policy suggest` to add to it"
    )]
    FlowStyle {
        file: String,
        line: usize,
        column: usize,
        field: &'static str,
    },
    #[error("{file}:{line}:{column}: `{field}` is not a mapping")]
    NotMap {
        file: String,
        line: usize,
        column: usize,
        field: &'static str,
    },
}

fn entries(n: &Node) -> &[(Node, Node)] {
    match &n.kind {
        Kind::Map(m) => m,
        _ => &[],
    }
}

fn key_is(k: &Node, name: &str) -> bool {
    matches!(&k.kind, Kind::Scalar { text, .. } if text == name)
}

fn find(m: &[(Node, Node)], name: &str) -> Option<usize> {
    m.iter().position(|(k, _)| key_is(k, name))
}

fn scalar(n: &Node) -> Option<&str> {
    match &n.kind {
        Kind::Scalar { text, .. } => Some(text),
        _ => None,
    }
}

/// A YAML scalar for `s`: plain when that reads back as the same string, else quoted.
#[must_use]
pub fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_' | '+'))
        && !s.starts_with('-')
        && s.parse::<f64>().is_err()
        && !matches!(
            s,
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
        );
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
    }
}

enum Op {
    Delete,
    Replace(String),
    /// Lines to put after this one.
    After(Vec<String>),
}

struct Lines<'a> {
    text: Vec<&'a str>,
    /// 1-based line -> operations.
    ops: Vec<(usize, Op)>,
}

impl Lines<'_> {
    fn is_content(&self, line: usize) -> bool {
        self.text.get(line - 1).is_some_and(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
    }

    /// The last line with content in `[from, before)`.
    fn last_content(&self, from: usize, before: usize) -> usize {
        (from..before)
            .rev()
            .find(|l| self.is_content(*l))
            .unwrap_or(from)
    }

    fn render(mut self) -> String {
        self.ops.sort_by_key(|(l, _)| *l);
        let mut out = String::new();
        for (i, l) in self.text.iter().enumerate() {
            let n = i + 1;
            let mut keep = true;
            let mut after = Vec::new();
            for (_, op) in self.ops.iter().filter(|(l, _)| *l == n) {
                match op {
                    Op::Delete => keep = false,
                    Op::Replace(s) => {
                        keep = false;
                        out.push_str(s);
                        out.push('\n');
                    }
                    Op::After(v) => after.extend(v.iter().cloned()),
                }
            }
            if keep {
                out.push_str(l);
                out.push('\n');
            }
            for a in after {
                out.push_str(&a);
                out.push('\n');
            }
        }
        out
    }
}

/// `text` of `file` with `edit` applied to the document of `edit.identity`.
///
/// # Errors
/// The file does not parse, has no such identity, or a list to extend is written in a
/// flow style with entries.
pub fn apply(file: &str, text: &str, edit: &Edit<'_>) -> Result<String, EditError> {
    let mut errors = Vec::new();
    let docs = parse_documents(file, text, &mut errors);
    if let Some(e) = errors.first() {
        return Err(EditError::Parse {
            file: file.to_owned(),
            why: e.to_string(),
        });
    }
    let mut lines = Lines {
        text: text.lines().collect(),
        ops: Vec::new(),
    };
    let total = lines.text.len() + 1;
    let doc = docs
        .iter()
        .find(|d| {
            let root = entries(d);
            find(root, "metadata")
                .and_then(|i| find(entries(&root[i].1), "name").map(|j| &entries(&root[i].1)[j].1))
                .and_then(scalar)
                == Some(edit.identity)
        })
        .ok_or_else(|| EditError::NoIdentity {
            file: file.to_owned(),
            identity: edit.identity.to_owned(),
        })?;
    // Where this document ends: the next document marker, or the end of the file.
    let doc_end = (doc.line + 1..total)
        .find(|l| lines.text[l - 1].starts_with("---") || lines.text[l - 1].starts_with("..."))
        .unwrap_or(total);
    let root = entries(doc);
    let Some(si) = find(root, "spec") else {
        return Err(EditError::NotMap {
            file: file.to_owned(),
            line: doc.line,
            column: doc.column,
            field: "spec",
        });
    };
    let (spec_key, spec) = &root[si];
    let spec_end = root.get(si + 1).map_or(doc_end, |(k, _)| k.line);
    let spec_entries = entries(spec);
    if spec_entries.is_empty() {
        return Err(EditError::NotMap {
            file: file.to_owned(),
            line: spec_key.line,
            column: spec_key.column,
            field: "spec",
        });
    }
    let child_indent = " ".repeat(spec_entries[0].0.column - 1);
    let next_of = |i: usize| spec_entries.get(i + 1).map_or(spec_end, |(k, _)| k.line);

    if edit.enforce
        && let Some(i) = find(spec_entries, "mode")
        && scalar(&spec_entries[i].1) == Some("audit")
        && spec_entries[i].1.line == spec_entries[i].0.line
    {
        lines.ops.push((spec_entries[i].0.line, Op::Delete));
    }

    if !edit.egress.is_empty() {
        let items = |dash: &str| -> Vec<String> {
            edit.egress
                .iter()
                .flat_map(|r| r.iter().map(move |l| format!("{dash}{l}")))
                .collect()
        };
        match find(spec_entries, "egress") {
            None => {
                let at = lines.last_content(spec_key.line, spec_end);
                let mut v = vec![format!("{child_indent}egress:")];
                v.extend(items(&child_indent));
                lines.ops.push((at, Op::After(v)));
            }
            Some(i) => extend_list(
                &mut lines,
                file,
                &spec_entries[i],
                next_of(i),
                "spec.egress",
                &child_indent,
                items,
            )?,
        }
    }

    if !edit.exec.is_empty()
        && let Some(i) = find(spec_entries, "exec")
        && let Some(j) = find(entries(&spec_entries[i].1), "allow")
    {
        let exec = entries(&spec_entries[i].1);
        let end = exec.get(j + 1).map_or(next_of(i), |(k, _)| k.line);
        let indent = " ".repeat(exec[j].0.column - 1);
        let items = |dash: &str| -> Vec<String> {
            edit.exec
                .iter()
                .flat_map(|(path, why)| {
                    [
                        format!("{dash}# {why}"),
                        format!("{dash}- {}", yaml_str(path)),
                    ]
                })
                .collect()
        };
        extend_list(
            &mut lines,
            file,
            &exec[j],
            end,
            "spec.exec.allow",
            &indent,
            items,
        )?;
    }
    Ok(lines.render())
}

/// Add `items(dash indentation)` after the last entry of the block list `(key, value)`,
/// or turn an empty flow list (`[]`) into a block list.
fn extend_list(
    lines: &mut Lines<'_>,
    file: &str,
    (key, value): &(Node, Node),
    end: usize,
    field: &'static str,
    key_indent: &str,
    items: impl Fn(&str) -> Vec<String>,
) -> Result<(), EditError> {
    let seq = match &value.kind {
        Kind::Seq(s) => s,
        _ => &Vec::new(),
    };
    if value.line == key.line {
        // `field: []` (or a null): the list starts here.
        if !seq.is_empty() {
            return Err(EditError::FlowStyle {
                file: file.to_owned(),
                line: value.line,
                column: value.column,
                field,
            });
        }
        let name = scalar(key).unwrap_or("egress");
        lines
            .ops
            .push((key.line, Op::Replace(format!("{key_indent}{name}:"))));
        lines
            .ops
            .push((key.line, Op::After(items(&format!("{key_indent}  ")))));
        return Ok(());
    }
    let dash = seq.first().map_or_else(
        || format!("{key_indent}  "),
        |f| " ".repeat(f.column.saturating_sub(3)),
    );
    let at = lines.last_content(key.line, end);
    lines.ops.push((at, Op::After(items(&dash))));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: zt-agent/v1
kind: Identity
metadata:
  name: coder
  owner: a@example.com
spec:
  mode: audit
  exec:
    allow:
      - /bin/true   # the shell's helper
  egress:
    # the registry
    - to: [pypi.org]
      ports: [443]
      protocol: tcp

  ingress: []
---
apiVersion: zt-agent/v1
kind: Identity
metadata:
  name: other
  owner: b@example.com
spec:
  egress: []
";

    fn rule(to: &str, port: u16) -> Vec<String> {
        vec![
            format!("# learned: {to}"),
            format!("- to: [{to}]"),
            format!("  ports: [{port}]"),
            "  protocol: tcp".to_owned(),
        ]
    }

    #[test]
    fn rules_go_after_the_last_rule_and_mode_audit_goes() {
        let egress = [rule("api.example.test", 8443)];
        let exec = [("/usr/bin/git".to_owned(), "learned: 3 execs".to_owned())];
        let out = apply(
            "p.yaml",
            DOC,
            &Edit {
                identity: "coder",
                egress: &egress,
                exec: &exec,
                enforce: true,
            },
        )
        .expect("edit");
        assert!(!out.contains("mode: audit"), "{out}");
        assert!(
            out.contains(
                "      protocol: tcp\n    # learned: api.example.test\n    - to: [api.example.test]\n      ports: [8443]\n      protocol: tcp\n\n  ingress: []"
            ),
            "{out}"
        );
        assert!(
            out.contains("      - /bin/true   # the shell's helper\n      # learned: 3 execs\n      - /usr/bin/git\n  egress:"),
            "{out}"
        );
        // The other document is untouched, and the result loads.
        assert!(out.ends_with("spec:\n  egress: []\n"), "{out}");
        let p = crate::policy::load_str("p.yaml", &out).expect("loads");
        assert_eq!(p.identities.len(), 2);
    }

    #[test]
    fn an_empty_flow_list_becomes_a_block_list() {
        let egress = [rule("10.0.0.7", 5432)];
        let out = apply(
            "p.yaml",
            DOC,
            &Edit {
                identity: "other",
                egress: &egress,
                exec: &[],
                enforce: true,
            },
        )
        .expect("edit");
        assert!(
            out.ends_with("spec:\n  egress:\n    # learned: 10.0.0.7\n    - to: [10.0.0.7]\n      ports: [5432]\n      protocol: tcp\n"),
            "{out}"
        );
        crate::policy::load_str("p.yaml", &out).expect("loads");
    }

    #[test]
    fn flow_lists_with_entries_and_unknown_identities_are_refused() {
        let text = "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: x\n  owner: o\nspec:\n  egress: [{to: [a.test], ports: [1]}]\n";
        let egress = [rule("b.test", 2)];
        let e = |identity| Edit {
            identity,
            egress: &egress,
            exec: &[],
            enforce: false,
        };
        let err = apply("p.yaml", text, &e("x")).expect_err("flow");
        assert!(
            err.to_string().starts_with("p.yaml:7:11: `spec.egress`"),
            "{err}"
        );
        let err = apply("p.yaml", text, &e("y")).expect_err("unknown");
        assert!(
            err.to_string().contains("no document of identity `y`"),
            "{err}"
        );
    }

    #[test]
    fn scalars_are_quoted_only_when_they_must_be() {
        assert_eq!(yaml_str("api.example.test"), "api.example.test");
        assert_eq!(yaml_str("/usr/bin/python3.11"), "/usr/bin/python3.11");
        assert_eq!(yaml_str("2001:db8::1"), "\"2001:db8::1\"");
        assert_eq!(yaml_str("10"), "\"10\"");
        assert_eq!(yaml_str("yes"), "\"yes\"");
        assert_eq!(yaml_str("a b"), "\"a b\"");
    }
}
