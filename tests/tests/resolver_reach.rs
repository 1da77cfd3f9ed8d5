//! Nobody addresses the agent's resolver directly, by any address form: only the
//! kernel's redirection of DNS reaches it, so the resolver always knows who asks. The
//! unspecified addresses reach loopback after the hooks have run, so they are closed
//! too, for every way of sending, enrolled or not, as an unprivileged user.

use zt_agent_tests::{DENIED, Daemon, Identity, Rule, run_probe_unenrolled};

/// Every way to name the resolver's loopback address: the address itself, the
/// unspecified addresses the kernel turns into it, and their v4-mapped forms.
const FORMS: [&str; 6] = [
    "127.0.0.1",
    "0.0.0.0",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:0.0.0.0",
];
const MODES: [&str; 3] = ["udp-sendto", "udp-connect", "tcp"];

#[test]
fn the_resolver_is_reached_by_no_address_form() {
    let policy = Identity::new("rr")
        // The identity may reach loopback on every port but the resolver's.
        .egress(Rule::to(["127.0.0.0/8", "::1"]));
    let d = Daemon::start("resolver-reach", &policy);
    let port = d.state()["dns_port"]
        .as_u64()
        .expect("dns port")
        .to_string();
    let mut open = Vec::new();
    for host in FORMS {
        for mode in MODES {
            let (code, out) = d.run("rr", &[mode, host, &port]);
            if code != DENIED {
                open.push(format!("enrolled {mode} {host}: {out}"));
            }
            let (code, out) = run_probe_unenrolled(&["as-uid", "65534", mode, host, &port]);
            if code != DENIED {
                open.push(format!("unenrolled {mode} {host}: {out}"));
            }
        }
    }
    assert!(
        open.is_empty(),
        "the resolver was reached directly:\n{}",
        open.join("\n")
    );
    // What the kernel redirects still gets there, and is answered by identity.
    let (code, out) = d.run("rr", &["dns", "udp", "10.255.255.1", "x.invalid", "A"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"rcode\":\"REFUSED\""), "{out}");
}
