//! Review: per identity, what the policy grants and what the identity did with it over
//! a period: its owner and mode, its rules, what the observation store saw (flows and
//! execs, denials by destination), and the grants given to it with who gave them and
//! why. As JSON for tools and as Markdown for people.

use std::fmt::Write as _;

use serde::Serialize;

use super::store::{Seen, Store};
use super::suggest::when;
use crate::grants::model::Grant;
use crate::grants::store::Decision;
use crate::policy::{Identity, Mode};

#[derive(Debug, Serialize)]
pub struct Review {
    /// RFC 3339: the start of the period.
    pub since: String,
    pub identities: Vec<IdentityReview>,
}

#[derive(Debug, Serialize)]
pub struct IdentityReview {
    pub name: String,
    pub owner: String,
    pub mode: &'static str,
    pub spiffe_id: String,
    /// Where the identity is defined, `file:line:column`.
    pub defined_at: String,
    pub egress_rules: usize,
    pub ingress_rules: usize,
    /// Files of `exec.allow`; `None`: exec is not restricted.
    pub exec_allow: Option<usize>,
    pub flows: Vec<FlowRow>,
    pub execs: Vec<ExecRow>,
    /// Denied flows, by destination, port and protocol.
    pub denials: Vec<FlowRow>,
    /// Bytes sent and received, by destination, port and protocol, most sent first.
    pub traffic: Vec<TrafficRow>,
    pub grants: Vec<GrantRow>,
    pub decisions: Vec<DecisionRow>,
}

#[derive(Debug, Serialize)]
pub struct FlowRow {
    pub dest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    pub protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    pub verdict: &'static str,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct TrafficRow {
    pub dest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    pub protocol: &'static str,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct ExecRow {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub verdict: &'static str,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct GrantRow {
    pub id: String,
    pub to: Vec<String>,
    pub who: String,
    pub reason: String,
    pub issued: String,
    pub expires: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DecisionRow {
    pub time: String,
    pub action: String,
    pub who: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// What the grant store holds, read once for every identity.
pub struct GrantRecords {
    pub grants: Vec<Grant>,
    /// Decisions with the identity they concern.
    pub decisions: Vec<(String, Decision)>,
}

fn flow_row(f: &Seen<super::Flow>) -> FlowRow {
    FlowRow {
        dest: f.what.dest.clone(),
        name: f.what.name.clone(),
        port: f.what.port,
        protocol: f.what.protocol,
        binary: f.what.binary.clone(),
        verdict: f.what.verdict,
        count: f.count,
        first_seen: when(f.first_ms),
        last_seen: when(f.last_ms),
    }
}

/// The review of `ident` since `since_ms`.
///
/// # Errors
/// The observation store fails.
pub fn identity(
    ident: &Identity,
    store: &Store,
    records: &GrantRecords,
    since_ms: i64,
) -> Result<IdentityReview, super::ObserveError> {
    let flows = store.flows(&ident.name, since_ms)?;
    let execs = store.execs(&ident.name, since_ms)?;
    let traffic = store
        .bytes(&ident.name, since_ms)?
        .into_iter()
        .map(|m| TrafficRow {
            dest: m.what.dest,
            name: m.what.name,
            port: m.what.port,
            protocol: m.what.protocol,
            sent_bytes: m.sent,
            received_bytes: m.received,
            first_seen: when(m.first_ms),
            last_seen: when(m.last_ms),
        })
        .collect();
    let mut denials: Vec<FlowRow> = Vec::new();
    for f in flows.iter().filter(|f| f.what.verdict == "deny") {
        // One row per destination, port and protocol, whatever the binary.
        match denials.iter_mut().find(|d| {
            d.dest == f.what.dest && d.port == f.what.port && d.protocol == f.what.protocol
        }) {
            Some(d) => {
                d.count += f.count;
                d.first_seen = d.first_seen.clone().min(when(f.first_ms));
                d.last_seen = d.last_seen.clone().max(when(f.last_ms));
                d.binary = None;
            }
            None => denials.push(flow_row(f)),
        }
    }
    denials.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.dest.cmp(&b.dest)));
    Ok(IdentityReview {
        name: ident.name.clone(),
        owner: ident.owner.clone(),
        mode: match ident.mode {
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        },
        spiffe_id: ident.spiffe_id(),
        defined_at: ident.location.to_string(),
        egress_rules: ident.egress.len(),
        ingress_rules: ident.ingress.len(),
        exec_allow: ident.exec_allow.as_ref().map(Vec::len),
        flows: flows.iter().map(flow_row).collect(),
        execs: execs
            .iter()
            .map(|e| ExecRow {
                file: e.what.file.clone(),
                sha256: e.what.sha256.clone(),
                verdict: e.what.verdict,
                count: e.count,
                first_seen: when(e.first_ms),
                last_seen: when(e.last_ms),
            })
            .collect(),
        denials,
        traffic,
        grants: records
            .grants
            .iter()
            .filter(|g| g.identity == ident.name && g.expires_ms >= since_ms)
            .map(|g| GrantRow {
                id: g.id.clone(),
                to: g.to.clone(),
                who: g.who.clone(),
                reason: g.reason.clone(),
                issued: when(g.issued_ms),
                expires: when(g.expires_ms),
                state: g.state.as_str(),
                ended: g.ended.clone(),
            })
            .collect(),
        decisions: records
            .decisions
            .iter()
            .filter(|(who, d)| *who == ident.name && d.time_ms >= since_ms)
            .map(|(_, d)| DecisionRow {
                time: when(d.time_ms),
                action: d.action.clone(),
                who: d.who.clone(),
                reason: d.reason.clone(),
                grant: d.grant.clone(),
                request: d.request.clone(),
            })
            .collect(),
    })
}

/// Table cells never break a Markdown row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The review as Markdown, one section per identity.
#[must_use]
pub fn markdown(r: &Review) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# zt-agent review since {}\n", r.since);
    for i in &r.identities {
        let _ = writeln!(md, "## {}\n", cell(&i.name));
        let _ = writeln!(
            md,
            "Owner {}, mode {}, {}; defined at {}. {} egress and {} ingress rules; exec {}.\n",
            cell(&i.owner),
            i.mode,
            cell(&i.spiffe_id),
            cell(&i.defined_at),
            i.egress_rules,
            i.ingress_rules,
            i.exec_allow.map_or_else(
                || "not restricted".to_owned(),
                |n| format!("limited to {n} files")
            )
        );
        let flows = |md: &mut String, title: &str, rows: &[FlowRow]| {
            let _ = writeln!(md, "### {title}\n");
            if rows.is_empty() {
                let _ = writeln!(md, "None.\n");
                return;
            }
            let _ = writeln!(
                md,
                "| destination | port | protocol | binary | verdict | count | last seen |\n|---|---:|---|---|---|---:|---|"
            );
            for f in rows {
                let dest = f
                    .name
                    .as_ref()
                    .map_or_else(|| f.dest.clone(), |n| format!("{n} ({})", f.dest));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    cell(&dest),
                    f.port,
                    f.protocol,
                    cell(f.binary.as_deref().unwrap_or("")),
                    f.verdict,
                    f.count,
                    f.last_seen
                );
            }
            md.push('\n');
        };
        flows(&mut md, "Denials", &i.denials);
        flows(&mut md, "Flows observed", &i.flows);
        let _ = writeln!(md, "### Bytes by destination\n");
        if i.traffic.is_empty() {
            let _ = writeln!(md, "None.\n");
        } else {
            let _ = writeln!(
                md,
                "| destination | port | protocol | sent | received | last seen |\n|---|---:|---|---:|---:|---|"
            );
            for t in &i.traffic {
                let dest = t
                    .name
                    .as_ref()
                    .map_or_else(|| t.dest.clone(), |n| format!("{n} ({})", t.dest));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    cell(&dest),
                    t.port,
                    t.protocol,
                    t.sent_bytes,
                    t.received_bytes,
                    t.last_seen
                );
            }
            md.push('\n');
        }
        let _ = writeln!(md, "### Execs observed\n");
        if i.execs.is_empty() {
            let _ = writeln!(md, "None.\n");
        } else {
            let _ = writeln!(
                md,
                "| file | verdict | count | last seen |\n|---|---|---:|---|"
            );
            for e in &i.execs {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    cell(&e.file),
                    e.verdict,
                    e.count,
                    e.last_seen
                );
            }
            md.push('\n');
        }
        let _ = writeln!(md, "### Grants\n");
        if i.grants.is_empty() {
            let _ = writeln!(md, "None.\n");
        } else {
            let _ = writeln!(
                md,
                "| grant | to | who | why | issued | expires | state |\n|---|---|---|---|---|---|---|"
            );
            for g in &i.grants {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    cell(&g.id),
                    cell(&g.to.join(", ")),
                    cell(&g.who),
                    cell(&g.reason),
                    g.issued,
                    g.expires,
                    g.ended.as_deref().unwrap_or(g.state)
                );
            }
            md.push('\n');
        }
    }
    md
}
