//! YAML text to a tree of nodes with positions, one tree per document.
//!
//! The tree is built from the parser's events rather than through serde so that one pass
//! can report every problem of a document (serde stops at the first), keep the position of
//! every key and value, see duplicate keys, and tell quoted from plain scalars. Every syntax
//! error carries file:line:column; the schema is checked in `decode`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::PolicyError;

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
pub(super) enum ScalarType {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

impl Node {
    pub(super) fn scalar_type(&self) -> Option<ScalarType> {
        match &self.kind {
            Kind::Scalar { text, plain: true } => Some(resolve_plain(text)),
            Kind::Scalar { plain: false, .. } => Some(ScalarType::Str),
            _ => None,
        }
    }

    pub(super) fn describe(&self) -> &'static str {
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
}
