//! Tamper detection: a process with full capabilities detaches programs or removes
//! pins under a running daemon. The daemon notices within a second, reports it (an
//! event, a metric), and enforcement is back: the programs attached again, the pins in
//! place.

use std::time::{Duration, Instant};

use zt_agent_tests::maps::detach_link;
use zt_agent_tests::{DENIED, Daemon, Identity, OK, Rule, TcpServer};

/// Enrolled connects to `port` until one is denied, for up to `secs`.
fn denied_within(d: &Daemon, id: &str, port: u16, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if d.run(id, &["tcp", "127.0.0.1", &port.to_string()]).0 == DENIED {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn detached_programs_are_attached_again_and_reported() {
    let allowed = TcpServer::new("127.0.0.1");
    let other = TcpServer::new("127.0.0.1");
    let policy = Identity::new("tamper").egress(Rule::to(["127.0.0.1"]).ports([allowed.port]));
    let d = Daemon::start("tamper-detach", &policy);
    assert_eq!(
        d.run("tamper", &["tcp", "127.0.0.1", &other.port.to_string()])
            .0,
        DENIED
    );

    let t0 = Instant::now();
    for prog in ["zt_connect4", "zt_bind4", "zt_skb_ingress"] {
        detach_link(&d.pin_dir.join("links").join(prog)).expect("detach");
    }
    for prog in ["zt_connect4", "zt_bind4", "zt_skb_ingress"] {
        let ev = d.wait_event("the tamper event", |e| {
            e["kind"] == "tamper"
                && e["reason"] == "link_detached"
                && e["detail"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(prog) && s.ends_with("restored"))
        });
        assert_eq!(ev["identity"], "");
    }
    let noticed = t0.elapsed();
    assert!(
        noticed < Duration::from_secs(3),
        "noticed after {noticed:?}"
    );
    assert!(
        denied_within(&d, "tamper", other.port, 2),
        "the connect program did not come back"
    );
    assert_eq!(
        d.run("tamper", &["tcp", "127.0.0.1", &allowed.port.to_string()])
            .0,
        OK
    );
    // The pin names the new link: detaching through it works again, and is seen again.
    detach_link(&d.pin_dir.join("links/zt_connect4")).expect("detach again");
    assert!(denied_within(&d, "tamper", other.port, 3));
    assert!(
        d.metric(r#"zt_agent_tamper_total{what="link_detached"}"#) >= 4.0,
        "{}",
        d.metrics()
    );
}

#[test]
fn removed_pins_detach_nothing_and_come_back() {
    let other = TcpServer::new("127.0.0.1");
    let d = Daemon::start("tamper-pins", Identity::new("tamper-p"));
    let links = d.pin_dir.join("links");
    let maps = d.pin_dir.join("maps");
    // Removing a link's pin would detach its program if nothing else held the link;
    // a removed map pin keeps `zt-agent run` and a successor daemon from the map.
    for p in [
        links.join("zt_connect4"),
        links.join("zt_fork"),
        maps.join("ZT_TASKS"),
    ] {
        std::fs::remove_file(&p).expect("remove pin");
    }
    for (reason, name) in [
        ("link_pin_removed", "zt_connect4"),
        ("link_pin_removed", "zt_fork"),
        ("map_pin_removed", "ZT_TASKS"),
    ] {
        d.wait_event("the tamper event", |e| {
            e["kind"] == "tamper"
                && e["reason"] == reason
                && e["detail"].as_str().is_some_and(|s| s.contains(name))
        });
    }
    for p in [
        links.join("zt_connect4"),
        links.join("zt_fork"),
        maps.join("ZT_TASKS"),
    ] {
        assert!(p.exists(), "{} was not pinned again", p.display());
    }
    // Enforcement never stopped, and the launcher reaches its maps again.
    assert_eq!(
        d.run("tamper-p", &["tcp", "127.0.0.1", &other.port.to_string()])
            .0,
        DENIED
    );
    assert_eq!(
        d.run("tamper-p", &["child", "bind", "tcp", "127.0.0.1", "0"])
            .0,
        OK
    );
    assert!(d.metric(r#"zt_agent_tamper_total{what="map_pin_removed"}"#) >= 1.0);
}
