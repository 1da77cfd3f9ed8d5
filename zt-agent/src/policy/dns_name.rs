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

    /// Whether query name `qname` (any case, trailing dot optional) is covered.
    #[must_use]
    pub fn matches(&self, qname: &str) -> bool {
        let q = qname.strip_suffix('.').unwrap_or(qname);
        if !self.wildcard {
            return q.eq_ignore_ascii_case(&self.suffix);
        }
        // Below the suffix, at a label boundary.
        q.len() > self.suffix.len() + 1
            && q.as_bytes()[q.len() - self.suffix.len() - 1] == b'.'
            && q[q.len() - self.suffix.len()..].eq_ignore_ascii_case(&self.suffix)
    }
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
