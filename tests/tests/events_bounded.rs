//! Bounded events: a flood of denials (connects, or refused DNS) from one identity
//! writes a bounded number of lines and a summary of what was left out, while another
//! identity's single denial, and the flooding identity's exec denial, still appear; and
//! the event file rotates, by size and on SIGHUP.

use std::path::Path;
use std::time::{Duration, Instant};

use zt_agent_tests::{DENIED, Daemon, Identity, KILLED, OK, TcpServer, probe_bin};

const SOME_RESOLVER4: &str = "192.0.2.53";

/// Lines of `identity` of `kind`, and the sum of the `suppressed` counts summing up
/// that kind for it.
fn written_and_suppressed(d: &Daemon, identity: &str, kind: &str) -> (usize, u64) {
    let ev = d.events();
    let written = ev
        .iter()
        .filter(|e| e["identity"] == identity && e["kind"] == kind)
        .count();
    let suppressed = ev
        .iter()
        .filter(|e| {
            e["identity"] == identity && e["kind"] == "suppressed" && e["suppressed_kind"] == kind
        })
        .filter_map(|e| e["suppressed"].as_u64())
        .sum();
    (written, suppressed)
}

/// Wait until the summaries add up to what the metric counted, and return that.
fn summed_up(d: &Daemon, identity: &str, kind: &str) -> (usize, u64) {
    let series =
        format!("zt_agent_events_suppressed_total{{identity=\"{identity}\",kind=\"{kind}\"}}");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let counted = d.metric(&series) as u64;
        let (written, suppressed) = written_and_suppressed(d, identity, kind);
        if counted > 0 && suppressed == counted {
            return (written, suppressed);
        }
        assert!(
            Instant::now() < end,
            "summaries say {suppressed} suppressed, the metric {counted}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_flood_of_denials_is_bounded_summed_up_and_hides_nothing_later() {
    let probe = probe_bin().display().to_string();
    let policy = Identity::new("ev-flood")
        .exec_allow([&probe])
        .and(Identity::new("ev-other"));
    let d = Daemon::start("events-flood", &policy);
    let lo = TcpServer::new("127.0.0.1");
    let port = lo.port.to_string();
    // The daemon hashes each binary an enrolled task execs once per file version, on the
    // event path; let it hash the probe (a large debug build) before the flood, so that
    // the ring buffer does not fill while it does.
    assert_eq!(d.run("ev-flood", &["tcp", "127.0.0.1", &port]).0, DENIED);
    d.wait_event("the probe's exec", |e| {
        e["identity"] == "ev-flood" && e["kind"] == "exec" && !e["sha256"].is_null()
    });
    let (code, out) = d.run(
        "ev-flood",
        &["connects", "tcp", "127.0.0.1", &port, "20000"],
    );
    assert_eq!(code, OK, "{out}");
    assert!(out.contains("denied=20000"), "{out}");
    // Another identity's single deny, right after the flood.
    assert_eq!(d.run("ev-other", &["tcp", "127.0.0.1", &port]).0, DENIED);
    d.wait_event("the other identity's deny", |e| {
        e["identity"] == "ev-other" && e["kind"] == "connect"
    });
    // The flooding identity's exec denial has a budget of its own.
    let (code, out) = d.run("ev-flood", &["spawn", "/usr/bin/false"]);
    assert_eq!(code, KILLED, "{out}");
    d.wait_event("the exec denial", |e| {
        e["identity"] == "ev-flood" && e["kind"] == "exec" && e["verdict"] == "deny"
    });
    let (written, suppressed) = summed_up(&d, "ev-flood", "connect");
    assert!(written <= 400, "{written} lines for one flood");
    assert!(
        written as u64 + suppressed >= 15_000,
        "{written} written, {suppressed} suppressed of 20000"
    );
    let summary = d.wait_event("a summary", |e| {
        e["kind"] == "suppressed" && e["identity"] == "ev-flood"
    });
    assert_eq!(summary["verdict"], "deny", "{summary}");
    assert_eq!(summary["reason"], "no_rule", "{summary}");
    assert_eq!(summary["suppressed_kind"], "connect", "{summary}");
    // Once the flood is over, the same cause is written again.
    std::thread::sleep(Duration::from_millis(1500));
    let later = TcpServer::new("127.0.0.1");
    assert_eq!(
        d.run("ev-flood", &["tcp", "127.0.0.1", &later.port.to_string()])
            .0,
        DENIED
    );
    d.wait_event("a deny after the flood", |e| {
        e["identity"] == "ev-flood" && e["dst"] == format!("127.0.0.1:{}", later.port)
    });
    let size = std::fs::metadata(&d.events_path).expect("events").len();
    assert!(size < 1_000_000, "{size} bytes of events");
}

#[test]
fn refused_dns_from_one_identity_is_bounded_too() {
    let policy = Identity::new("ev-dns").and(Identity::new("ev-dns-other"));
    let d = Daemon::start_with("events-dns", &policy, &["--dns-upstream", "127.0.0.1:9"]);
    let (code, out) = d.run(
        "ev-dns",
        &[
            "dns-flood",
            SOME_RESOLVER4,
            "c2VjcmV0.refused.test",
            "10000",
            "16",
        ],
    );
    assert_eq!(code, OK, "{out}");
    let (code, out) = d.run(
        "ev-dns-other",
        &["dns", "udp", SOME_RESOLVER4, "one.refused.test", "A"],
    );
    assert_eq!(code, OK, "{out}");
    d.wait_event("the other identity's refusal", |e| {
        e["identity"] == "ev-dns-other" && e["query"] == "one.refused.test"
    });
    let (written, suppressed) = summed_up(&d, "ev-dns", "dns");
    assert!(written <= 400, "{written} lines for one flood");
    assert!(suppressed > 0);
}

#[test]
fn the_event_file_rotates_by_size() {
    let d = Daemon::start_with(
        "events-size",
        Identity::new("ev-size"),
        &["--events-max-bytes", "20000", "--events-keep", "2"],
    );
    let lo = TcpServer::new("127.0.0.1");
    // Several causes, so that more than the cap gets through the budgets.
    for proto in ["tcp", "udp"] {
        let (code, out) = d.run(
            "ev-size",
            &["connects", proto, "127.0.0.1", &lo.port.to_string(), "500"],
        );
        assert_eq!(code, OK, "{out}");
    }
    let numbered = |n: usize| {
        let mut p = d.events_path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        std::path::PathBuf::from(p)
    };
    let end = Instant::now() + Duration::from_secs(15);
    while !numbered(2).exists() {
        assert!(Instant::now() < end, "not rotated twice:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!numbered(3).exists(), "keeps 2");
    for p in [d.events_path.clone(), numbered(1), numbered(2)] {
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            text.len() <= 20_000,
            "{}: {} bytes",
            p.display(),
            text.len()
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{}: a cut line ({e}): {line}", p.display()));
        }
    }
}

fn lines_of(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole line"))
        .collect()
}

#[test]
fn the_event_file_reopens_on_sighup_and_survives_copytruncate() {
    let d = Daemon::start("events-hup", Identity::new("ev-hup"));
    let deny = |port: u16| {
        assert_eq!(
            d.run("ev-hup", &["tcp", "127.0.0.1", &port.to_string()]).0,
            DENIED
        );
        d.wait_event("the deny", |e| e["dst"] == format!("127.0.0.1:{port}"));
    };
    let a = TcpServer::new("127.0.0.1");
    deny(a.port);
    // logrotate's `create`: the file is renamed, and SIGHUP opens the path again.
    let old = d.events_path.with_extension("old");
    std::fs::rename(&d.events_path, &old).expect("rename");
    d.hup();
    let end = Instant::now() + Duration::from_secs(10);
    while !d.events_path.exists() {
        assert!(Instant::now() < end, "not reopened:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = TcpServer::new("127.0.0.1");
    deny(b.port);
    assert!(
        lines_of(&old)
            .iter()
            .any(|e| e["dst"] == format!("127.0.0.1:{}", a.port))
    );
    assert!(
        !lines_of(&old)
            .iter()
            .any(|e| e["dst"] == format!("127.0.0.1:{}", b.port))
    );
    // `copytruncate`: the file is emptied in place; the next line starts it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&d.events_path)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    let c = TcpServer::new("127.0.0.1");
    deny(c.port);
    let text = std::fs::read(&d.events_path).expect("read");
    assert_eq!(text.first(), Some(&b'{'), "no hole before the new line");
    let _ = std::fs::remove_file(&old);
}
