//! The Grafana dashboard in deploy/grafana/: every query in it names metrics a running
//! daemon serves, and only labels those metrics carry.

use std::collections::{BTreeMap, BTreeSet};

use zt_agent_tests::{DENIED, Daemon, Dnsmasq, Identity, OK, Peer, Rule};

/// Any resolver address: the kernel sends the query to the agent's resolver anyway.
const SOME_RESOLVER4: &str = "192.0.2.53";

/// Series names in a Prometheus text page, each with the label names it carries.
fn series(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if let Some(body) = line[name_end..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .map(|(b, _)| b)
        {
            // k="v",k2="v2": label values here never hold `",`.
            for pair in body.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_owned());
                }
            }
        }
    }
    out
}

/// The metric names and the label names one PromQL expression uses.
fn uses(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("zt_agent_") {
        let tail = &rest[i..];
        let end = tail.find(|c| !word(c)).unwrap_or(tail.len());
        metrics.insert(tail[..end].to_owned());
        rest = &tail[end..];
        // Matchers right after the name: {k="v", ...}.
        if let Some(body) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) {
            for m in body.0.split(',') {
                let k: String = m.trim().chars().take_while(|c| word(*c)).collect();
                if !k.is_empty() {
                    labels.insert(k);
                }
            }
        }
    }
    for kw in ["by (", "without ("] {
        let mut rest = expr;
        while let Some(i) = rest.find(kw) {
            let tail = &rest[i + kw.len()..];
            let end = tail.find(')').unwrap_or(tail.len());
            labels.extend(
                tail[..end]
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
            rest = &tail[end..];
        }
    }
    (metrics, labels)
}

fn dashboard_exprs() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/zt-agent.json"
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    exprs
}

#[test]
fn every_dashboard_query_names_metrics_and_labels_the_daemon_serves() {
    let peer = Peer::new("ztdash1", &["10.231.47.1/24"]);
    let up = Dnsmasq::start("dash", &[("10.231.47.1", "api.dash.test")], 60);
    let srv = peer.tcp_server("10.231.47.1");
    let policy = Identity::new("dash").egress(Rule::to(["api.dash.test"]).ports([srv.port]).tcp());
    let d = Daemon::start_with("dash", &policy, &["--dns-upstream", &up.upstream()]);
    // Traffic of every kind the dashboard shows: a lookup and an allowed connect, a
    // denied one, a bind to a port no ingress rule opens, and a task that runs while
    // the metrics are read.
    let port = srv.port.to_string();
    let (code, out) = d.run("dash", &["dns-tcp", SOME_RESOLVER4, "api.dash.test", &port]);
    assert_eq!(code, OK, "{out}");
    assert_eq!(d.run("dash", &["tcp", "10.231.47.1", "9"]).0, DENIED);
    assert_eq!(
        d.run("dash", &["bind", "tcp", "127.0.0.1", "47990"]).0,
        DENIED
    );
    let mut running = d.spawn_run("dash", &["spawn", "/bin/sleep", "30"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while d.metric(r#"zt_agent_identity_tasks{identity="dash"}"#) < 1.0 {
        assert!(std::time::Instant::now() < deadline, "{}", d.metrics());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let page = d.metrics();
    let _ = running.kill();
    let _ = running.wait();
    let served = series(&page);
    let mut problems = Vec::new();
    for expr in dashboard_exprs() {
        let (metrics, labels) = uses(&expr);
        if metrics.is_empty() {
            problems.push(format!("{expr}: names no zt-agent metric"));
        }
        let mut carried: BTreeSet<String> = BTreeSet::new();
        for m in &metrics {
            match served.get(m) {
                Some(l) => carried.extend(l.iter().cloned()),
                None => problems.push(format!("{expr}: `{m}` is not served")),
            }
        }
        for l in &labels {
            if !carried.contains(l) {
                problems.push(format!(
                    "{expr}: no served series of {metrics:?} has label `{l}`"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}\n\n{page}", problems.join("\n"));
}

#[test]
fn the_query_reader_finds_names_and_labels() {
    let (m, l) = uses(
        r#"histogram_quantile(0.99, sum by (le, result) (rate(zt_agent_dns_latency_seconds_bucket{identity="a", result!="x"}[5m])))"#,
    );
    assert_eq!(m, ["zt_agent_dns_latency_seconds_bucket".to_owned()].into());
    assert_eq!(l, ["identity", "le", "result"].map(str::to_owned).into());
    let s = series("# TYPE x counter\nzt_agent_x{a=\"1\",b=\"2\"} 3\nzt_agent_y 1\n");
    assert_eq!(s["zt_agent_x"], ["a", "b"].map(str::to_owned).into());
    assert!(s["zt_agent_y"].is_empty());
}
