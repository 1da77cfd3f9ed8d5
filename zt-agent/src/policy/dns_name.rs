//! DNS names in `egress.to`: exact names and `*.` wildcards.

use std::fmt;

use serde::Serialize;

/// Longest name on the wire, without the trailing dot (RFC 1035).
const MAX_NAME: usize = 253;
/// Longest label (RFC 1035).
const MAX_LABEL: usize = 63;

/// A name pattern: `api.openai.com` matches that name only; `*.example.com` matches
/// every name below `example.com` at any depth, and not `example.com` itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName {
    /// Lowercase, without a trailing dot, and without the `*.` of a wildcard.
    pub suffix: String,
    pub wildcard: bool,
}

impl DnsName {
    /// Parse a policy entry. Names are case-insensitive; a trailing dot is allowed.
    ///
    /// # Errors
    /// A message naming what is wrong: a bare `*`, a `*` anywhere but as the whole
    /// first label, an empty label, a label or a name too long, a character outside
    /// letters, digits, `-` and `_`, or a name that looks like a mistyped address.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.strip_suffix('.').unwrap_or(s);
        if t == "*" {
            return Err(format!(
                "`{s}` matches every name; list the domains the identity needs (a wildcard is `*.example.com`)"
            ));
        }
        let (wildcard, rest) = match t.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, t),
        };
        if rest.contains('*') {
            return Err(format!(
                "invalid DNS name `{s}`: `*` may only be the whole first label, as in `*.example.com`"
            ));
        }
        if rest.is_empty() {
            return Err(format!("invalid DNS name `{s}`: empty"));
        }
        if rest.len() > MAX_NAME {
            return Err(format!(
                "invalid DNS name `{s}`: longer than {MAX_NAME} characters"
            ));
        }
        for label in rest.split('.') {
            if label.is_empty() {
                return Err(format!("invalid DNS name `{s}`: empty label"));
            }
            if label.len() > MAX_LABEL {
                return Err(format!(
                    "invalid DNS name `{s}`: label `{label}` is longer than {MAX_LABEL} characters"
                ));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(format!(
                    "invalid DNS name `{s}`: character `{c}` (names are letters, digits, `-` and `_`; write internationalised names in their xn-- form)"
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!(
                    "invalid DNS name `{s}`: label `{label}` starts or ends with `-`"
                ));
            }
        }
        if rest
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("invalid address, CIDR or DNS name `{s}`"));
        }
        Ok(Self {
            suffix: rest.to_ascii_lowercase(),
            wildcard,
        })
    }

    /// Whether query name `qname` (its text form, any case, trailing dot optional) is
    /// covered. A label that is not one a policy name can hold (an escaped dot or
    /// byte, say) covers nothing.
    #[must_use]
    pub fn matches(&self, qname: &str) -> bool {
        let q = qname.strip_suffix('.').unwrap_or(qname);
        let labels: Vec<&[u8]> = q.split('.').map(str::as_bytes).collect();
        self.matches_labels(&labels)
    }

    /// Whether the name with these wire labels (leftmost first, without the root) is
    /// covered: compared label by label, so that a label holding a dot (`evil\.zt`
    /// under `test`) never passes for two labels of the suffix.
    #[must_use]
    pub fn matches_labels(&self, labels: &[&[u8]]) -> bool {
        if !labels.iter().all(|l| valid_label(l)) {
            return false;
        }
        let n = self.suffix.split('.').count();
        let depth_ok = if self.wildcard {
            labels.len() > n
        } else {
            labels.len() == n
        };
        depth_ok
            && self
                .suffix
                .split('.')
                .rev()
                .zip(labels.iter().rev())
                .all(|(s, l)| s.as_bytes().eq_ignore_ascii_case(l))
    }
}

/// Whether a wire label is one a policy name can hold: 1 to 63 letters, digits, `-`
/// and `_`. Anything else (a dot, a backslash, a space, a byte past ASCII) is a name no
/// rule may cover.
#[must_use]
pub fn valid_label(label: &[u8]) -> bool {
    (1..=MAX_LABEL).contains(&label.len())
        && label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.suffix)
    }
}

impl Serialize for DnsName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DnsName {
        DnsName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn exact_names_match_themselves_only() {
        let n = name("API.OpenAI.com.");
        assert_eq!(n.to_string(), "api.openai.com");
        assert!(n.matches("api.openai.com"));
        assert!(n.matches("API.OPENAI.COM."));
        assert!(!n.matches("x.api.openai.com"));
        assert!(!n.matches("openai.com"));
        assert!(!n.matches("evilapi.openai.com"));
    }

    #[test]
    fn wildcards_match_below_the_suffix_only() {
        let n = name("*.githubusercontent.com");
        assert!(n.matches("objects.githubusercontent.com"));
        assert!(n.matches("a.b.githubusercontent.com."));
        assert!(!n.matches("githubusercontent.com"));
        assert!(!n.matches("evilgithubusercontent.com"));
        assert!(!n.matches("githubusercontent.com.evil.example"));
        assert!(!n.matches(".githubusercontent.com"));
    }

    #[test]
    fn names_are_matched_label_by_label() {
        let n = name("*.zt.test");
        fn l<'a>(ls: &[&'a str]) -> Vec<&'a [u8]> {
            ls.iter().map(|s| s.as_bytes()).collect()
        }
        assert!(n.matches_labels(&l(&["a", "zt", "test"])));
        assert!(n.matches_labels(&l(&["A", "b", "ZT", "test"])));
        // One label `evil2.zt` under `test`: its text form ends in `.zt.test`.
        assert!(!n.matches_labels(&l(&["evil2.zt", "test"])));
        assert!(!n.matches("evil2\\.zt.test"));
        for bad in ["a\\b", "a b", "\u{e9}", "*", "a\u{0}"] {
            assert!(!n.matches_labels(&l(&[bad, "zt", "test"])), "{bad:?}");
        }
        assert!(!n.matches_labels(&l(&["", "zt", "test"])));
        assert!(!n.matches_labels(&l(&["zt", "test"])));
        let exact = name("api.zt.test");
        assert!(exact.matches_labels(&l(&["api", "zt", "test"])));
        assert!(!exact.matches_labels(&l(&["api.zt", "test"])));
        assert!(!exact.matches_labels(&l(&["api", "zt.test"])));
        assert!(valid_label(b"xn--bcher-kva") && valid_label(b"_dmarc"));
        assert!(!valid_label(&[b'a'; 64]));
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        for (s, want) in [
            ("*", "matches every name"),
            ("*.", "matches every name"),
            ("api.*.com", "whole first label"),
            ("*api.com", "whole first label"),
            ("**.example.com", "whole first label"),
            ("a..b", "empty label"),
            ("-a.com", "starts or ends"),
            ("a b.com", "character ` `"),
            ("bücher.de", "xn--"),
            ("1.2.3.4.5", "invalid address"),
        ] {
            let e = DnsName::parse(s).expect_err(s);
            assert!(e.contains(want), "{s}: {e}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(
            DnsName::parse(&long)
                .expect_err("too long")
                .contains("longer than 63")
        );
        let too_long = vec!["abcdefghi"; 26].join(".");
        assert!(
            DnsName::parse(&too_long)
                .expect_err("too long")
                .contains("253")
        );
    }
}
