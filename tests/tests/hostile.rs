//! A daemon no local user can stop, and every socket it serves held against slow and
//! many clients: the metrics port (any local user reaches it) and the resolver's UDP
//! and TCP (any enrolled workload reaches them). Clients of the metrics port run as
//! the unprivileged `nobody`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use zt_agent_tests::{DENIED, Daemon, Dnsmasq, Identity, OK, Peer, Rule, TcpServer, probe_bin};

/// Any resolver address: the kernel sends the query to the agent's resolver anyway.
const SOME_RESOLVER4: &str = "192.0.2.53";
const SOME_RESOLVER6: &str = "2001:db8::53";
const NOBODY: &str = "65534";

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A background client, killed on drop.
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `child` and wait for the first line it prints.
fn first_line(mut c: Command) -> (Client, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn client");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    BufReader::new(out).read_line(&mut line).expect("read");
    (Client(child), line)
}

/// `zt-probe ARGS` as user nobody, unenrolled.
fn as_nobody(args: &[&str]) -> Command {
    let mut c = Command::new(probe_bin());
    c.args(["as-uid", NOBODY]).args(args);
    c
}

/// `zt-probe dns` under an identity: its JSON answer.
fn dns(d: &Daemon, id: &str, how: &str, server: &str, name: &str, t: &str) -> serde_json::Value {
    let (code, out) = d.run(id, &["dns", how, server, name, t]);
    assert_eq!(code, OK, "dns {how} {server} {name} {t}: {out}");
    let line = out.lines().find(|l| l.starts_with('{')).expect("answer");
    serde_json::from_str(line).expect("json")
}

/// The descriptor limit a service gets by default (systemd's soft limit, and a login
/// shell's): the daemon must hold with it.
fn default_fd_limit(d: &Daemon) {
    let pid = libc::pid_t::try_from(d.pid().expect("daemon runs")).expect("pid");
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading, then lowering, another process's limit, as root, through valid
    // structs; the hard limit stays (raising it would need CAP_SYS_RESOURCE).
    let r = unsafe {
        libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &raw mut l);
        l.rlim_cur = 1024;
        libc::prlimit(pid, libc::RLIMIT_NOFILE, &raw const l, std::ptr::null_mut())
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn metrics_port(d: &Daemon) -> String {
    d.metrics_addr.port().to_string()
}

#[test]
fn idle_connections_from_any_user_neither_stop_nor_starve_the_daemon() {
    let peer = Peer::new("zthost1", &["10.231.40.1/24"]);
    let up = Dnsmasq::start("hostile-idle", &[("10.231.40.1", "ok.hold.test")], 60);
    let srv = peer.tcp_server("10.231.40.1");
    let policy = Identity::new("hold-a").egress(Rule::to(["ok.hold.test"]).ports([srv.port]).tcp());
    let mut d = Daemon::start_with("hostile-idle", &policy, &["--dns-upstream", &up.upstream()]);
    default_fd_limit(&d);
    let port = metrics_port(&d);
    // More idle connections than the daemon has descriptors, each with a request it
    // never finishes.
    let request = hex("GET /metrics HTTP/1.1\r\nHost: x\r\n");
    let (_first, held) = first_line(as_nobody(&[
        "hold",
        "127.0.0.1",
        &port,
        "700",
        "60",
        &request,
    ]));
    assert!(held.starts_with("held 700"), "{held}");
    let (_second, held) = first_line(as_nobody(&[
        "hold",
        "127.0.0.1",
        &port,
        "700",
        "60",
        &request,
    ]));
    assert!(held.starts_with("held 700"), "{held}");
    assert!(d.alive(), "the daemon stopped:\n{}", d.log());
    // Scrapes are answered while the idle connections are held.
    for _ in 0..3 {
        let m = d.metrics();
        assert!(m.contains("zt_agent_part_up{part=\"metrics\"} 1"), "{m}");
    }
    // DNS (both transports), enforcement and events keep working.
    let a = dns(&d, "hold-a", "udp", SOME_RESOLVER4, "ok.hold.test", "A");
    assert_eq!(a["answers"][0], "10.231.40.1", "{a}");
    let t = dns(&d, "hold-a", "tcp", SOME_RESOLVER4, "ok.hold.test", "A");
    assert_eq!(t["answers"][0], "10.231.40.1", "{t}");
    assert_eq!(
        d.run("hold-a", &["tcp", "10.231.40.1", &srv.port.to_string()])
            .0,
        OK
    );
    let lo = TcpServer::new("127.0.0.1");
    assert_eq!(
        d.run("hold-a", &["tcp", "127.0.0.1", &lo.port.to_string()])
            .0,
        DENIED
    );
    d.wait_event("the deny", |e| {
        e["kind"] == "connect" && e["dst"] == format!("127.0.0.1:{}", lo.port)
    });
    assert!(d.alive(), "the daemon stopped:\n{}", d.log());
    assert!(!d.log().contains("part failed"), "{}", d.log());
}

#[test]
fn a_slow_client_of_the_metrics_port_is_cut_off() {
    let d = Daemon::start("hostile-slow", Identity::new("slow-m"));
    let port = metrics_port(&d);
    // Headers that never end, one byte every 300 ms.
    let trickle = hex(
        "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    );
    let out = Command::new(probe_bin())
        .args([
            "as-uid",
            NOBODY,
            "slowloris",
            "127.0.0.1",
            &port,
            &trickle,
            "300",
            "20",
        ])
        .output()
        .expect("slowloris");
    let text = String::from_utf8_lossy(&out.stdout);
    let ms: u64 = text
        .trim()
        .strip_prefix("closed_ms=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("never cut off: {text}"));
    assert!((4_000..9_000).contains(&ms), "cut off after {ms} ms");
    assert!(d.metrics().contains("zt_agent_build_info"));
}

#[test]
fn one_identity_holding_resolver_connections_never_starves_another() {
    let peer = Peer::new("zthost2", &["10.231.41.1/24", "fd00:231:41::1/64"]);
    let up = Dnsmasq::start(
        "hostile-tcp",
        &[
            ("10.231.41.1", "b.hog.test"),
            ("fd00:231:41::1", "b.hog.test"),
        ],
        60,
    );
    let srv = peer.tcp_server("10.231.41.1");
    let policy = Identity::new("dns-hog")
        .egress(Rule::to(["hog.hog.test"]).ports([443]).tcp())
        .and(Identity::new("dns-b").egress(Rule::to(["b.hog.test"]).ports([srv.port]).tcp()));
    let d = Daemon::start_with("hostile-tcp", &policy, &["--dns-upstream", &up.upstream()]);
    // dns-hog opens more TCP connections to the resolver than it has in all, over both
    // families, and sends nothing on them.
    let mut hog4 = d.spawn_run("dns-hog", &["hold", SOME_RESOLVER4, "53", "300", "60", "-"]);
    let mut hog6 = d.spawn_run("dns-hog", &["hold", SOME_RESOLVER6, "53", "100", "60", "-"]);
    for hog in [&mut hog4, &mut hog6] {
        let mut line = String::new();
        BufReader::new(hog.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert!(line.starts_with("held"), "{line}");
    }
    // dns-b still resolves over TCP, both families, and over UDP.
    for (server, t, want) in [
        (SOME_RESOLVER4, "A", "10.231.41.1"),
        (SOME_RESOLVER6, "AAAA", "fd00:231:41::1"),
    ] {
        let a = dns(&d, "dns-b", "tcp", server, "b.hog.test", t);
        assert_eq!(a["answers"][0], want, "{a}");
        let a = dns(&d, "dns-b", "udp", server, "b.hog.test", t);
        assert_eq!(a["answers"][0], want, "{a}");
    }
    assert_eq!(
        d.run("dns-b", &["tcp", "10.231.41.1", &srv.port.to_string()])
            .0,
        OK
    );
    // A slow client of the resolver's TCP is cut off: a length, then one byte of the
    // query every half second.
    let trickle = format!("0040{}", "61".repeat(64));
    let (code, out) = d.run(
        "dns-hog",
        &["slowloris", SOME_RESOLVER4, "53", &trickle, "500", "20"],
    );
    assert_eq!(code, OK, "{out}");
    let ms: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("closed_ms=")?.parse().ok())
        .unwrap_or_else(|| panic!("never cut off: {out}"));
    assert!(ms < 8_000, "cut off after {ms} ms");
    for mut hog in [hog4, hog6] {
        let _ = hog.kill();
        let _ = hog.wait();
    }
}

#[test]
fn a_query_flood_from_one_identity_leaves_another_answered() {
    let peer = Peer::new("zthost3", &["10.231.42.1/24"]);
    let up = Dnsmasq::start("hostile-udp", &[("10.231.42.1", "b.flood.test")], 60);
    let srv = peer.tcp_server("10.231.42.1");
    let policy = Identity::new("dns-flood")
        .egress(Rule::to(["*.flood.test"]).ports([443]).tcp())
        .and(Identity::new("dns-calm").egress(Rule::to(["b.flood.test"]).ports([srv.port]).tcp()));
    let mut d = Daemon::start_with("hostile-udp", &policy, &["--dns-upstream", &up.upstream()]);
    // Refused and allowed names alike, from many sockets, never waiting for an answer.
    let mut floods: Vec<Child> = ["x.refused.test", "nx.flood.test"]
        .iter()
        .map(|name| {
            d.spawn_run(
                "dns-flood",
                &["dns-flood", SOME_RESOLVER4, name, "30000", "64"],
            )
        })
        .collect();
    // Over UDP the flood and the other identity's queries share the resolver's receive
    // queue: a query may wait, or be lost and asked again, as stubs do.
    let answered = |d: &Daemon| {
        let (code, out) = d.run(
            "dns-calm",
            &["dns", "udp", SOME_RESOLVER4, "b.flood.test", "A"],
        );
        code == OK && out.contains("10.231.42.1")
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !answered(&d) {
        assert!(
            std::time::Instant::now() < end,
            "never answered during the flood"
        );
    }
    for f in &mut floods {
        let out = f.wait().expect("flood");
        assert!(out.success());
    }
    assert!(d.alive(), "{}", d.log());
    for _ in 0..3 {
        let a = dns(&d, "dns-calm", "udp", SOME_RESOLVER4, "b.flood.test", "A");
        assert_eq!(a["answers"][0], "10.231.42.1", "{a}");
    }
    let r = dns(&d, "dns-calm", "udp", SOME_RESOLVER4, "not.calm.test", "A");
    assert_eq!(r["rcode"], "REFUSED", "{r}");
    d.wait_event("the calm identity's refusal", |e| {
        e["kind"] == "dns" && e["identity"] == "dns-calm" && e["query"] == "not.calm.test"
    });
    let refused = d
        .events()
        .iter()
        .filter(|e| e["identity"] == "dns-flood" && e["query"] == "x.refused.test")
        .count();
    assert!(refused < 1_000, "{refused} lines for one flood");
}

/// `sent=S denied=D ...` from the probe's DNS floods.
fn sent_denied(out: &str) -> (usize, usize) {
    let field = |k: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
    };
    (field("sent="), field("denied="))
}

#[test]
fn the_resolvers_client_table_charges_new_sources_and_never_a_busy_socket() {
    let up = Dnsmasq::start("hostile-budget", &[("10.231.43.1", "b.budget.test")], 60);
    let policy = Identity::new("budget-busy")
        .egress(Rule::to(["b.budget.test"]).ports([443]).tcp())
        .and(Identity::new("budget-churn").egress(Rule::to(["b.budget.test"]).ports([443]).tcp()));
    let d = Daemon::start_with(
        "hostile-budget",
        &policy,
        &["--dns-upstream", &up.upstream()],
    );
    let cut = |d: &Daemon| d.metric(r#"zt_agent_kernel_errors_total{reason="dns_budget"}"#);
    // 20,000 queries over one socket, many times the budget of new entries per 100 ms:
    // the kernel lets every one through (the resolver's own shares pace them).
    let (code, out) = d.run(
        "budget-busy",
        &["dns-flood", SOME_RESOLVER4, "b.budget.test", "20000", "1"],
    );
    assert_eq!(code, OK, "{out}");
    assert_eq!(sent_denied(&out), (20_000, 0), "{out}");
    assert!(cut(&d) == 0.0, "{}", d.metrics());
    // A socket of its own for each query, faster than the budget: the kernel drops the
    // packets that would make new entries past it, for this identity alone.
    let (code, out) = d.run(
        "budget-churn",
        &["dns-fresh", SOME_RESOLVER4, "b.budget.test", "20000"],
    );
    assert_eq!(code, OK, "{out}");
    let (sent, denied) = sent_denied(&out);
    assert!(denied > 0 && sent + denied == 20_000, "{out}");
    assert!(cut(&d) >= denied as f64, "{out}\n{}", d.metrics());
    let a = dns(
        &d,
        "budget-busy",
        "udp",
        SOME_RESOLVER4,
        "b.budget.test",
        "A",
    );
    assert_eq!(a["answers"][0], "10.231.43.1", "{a}");
}

#[test]
fn every_part_reports_its_health() {
    let d = Daemon::start("hostile-parts", Identity::new("parts-a"));
    // The parts report themselves up as they start, a moment after readiness.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut m = d.metrics();
    while m.contains(" 0\n")
        && m.lines()
            .any(|l| l.starts_with("zt_agent_part_up{") && l.ends_with(" 0"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
        m = d.metrics();
    }
    let v6 = std::path::Path::new("/proc/net/if_inet6").exists();
    for part in [
        "event_pump",
        "event_sink",
        "metrics",
        "ticker",
        "enforcer",
        "dns_events",
        "dns_udp4",
        "dns_tcp4",
    ]
    .into_iter()
    .chain(v6.then_some(["dns_udp6", "dns_tcp6"]).into_iter().flatten())
    {
        assert!(
            m.contains(&format!("zt_agent_part_up{{part=\"{part}\"}} 1")),
            "{part}: {m}"
        );
        assert!(
            m.contains(&format!(
                "zt_agent_part_restarts_total{{part=\"{part}\"}} 0"
            )),
            "{part}: {m}"
        );
    }
}
