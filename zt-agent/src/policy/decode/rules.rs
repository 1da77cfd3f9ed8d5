//! `spec.egress` and `spec.ingress` rules: destinations and peers, ports, protocols,
//! `access` and `maxGrant`.

use super::{Decoder, Fields, index, join};
use crate::policy::model::{ALL_PORTS, Access, EgressRule, IngressRule, Protocol, Target};
use crate::policy::values::{parse_port, parse_port_str, parse_target};
use crate::policy::yaml::{Kind, Node, ScalarType};

impl Decoder<'_> {
    pub(super) fn rule(&mut self, node: &Node, path: &str) -> Option<EgressRule> {
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
    pub(super) fn ingress_rule(&mut self, node: &Node, path: &str) -> Option<IngressRule> {
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
    pub(super) fn targets<'n>(
        &mut self,
        f: &Fields<'n>,
        path: &str,
        name: &str,
    ) -> Option<&'n [Node]> {
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
    pub(super) fn ports(&mut self, f: &Fields<'_>, path: &str) -> Option<Vec<(u16, u16)>> {
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
    pub(super) fn protocol(&mut self, f: &Fields<'_>, path: &str) -> Option<Protocol> {
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

    pub(super) fn target(&mut self, node: &Node, field: &str) -> Option<Target> {
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

    pub(super) fn port_range(&mut self, node: &Node, field: &str) -> Option<(u16, u16)> {
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
