//! Soaks: a million connects across a hundred policy reloads, each verdict checked
//! against an oracle written from the policy (not from the agent's compiler); and the
//! daemon killed with SIGKILL over and over under traffic, leaking nothing and never
//! letting a denied connect through.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::IpAddr;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use zt_agent_tests::{
    DENIED, Daemon, Identity, OK, Rule, TcpServer, TestDir, Veth, cgroup2_root, probe_bin,
};

/// A destination the client connects to.
#[derive(Clone, Debug)]
struct Dest {
    tcp: bool,
    ip: IpAddr,
    port: u16,
}

impl Dest {
    fn line(&self) -> String {
        format!(
            "{} {} {}",
            if self.tcp { "tcp" } else { "udp" },
            self.ip,
            self.port
        )
    }
}

/// One rule as the oracle reads it: networks, ports (`None`: all), protocol (`None`:
/// any).
#[derive(Clone, Debug)]
struct OracleRule {
    nets: Vec<(IpAddr, u8)>,
    ports: Option<Vec<(u16, u16)>>,
    tcp: Option<bool>,
}

fn contains(net: (IpAddr, u8), ip: IpAddr) -> bool {
    let bits = |a: IpAddr| -> (u128, u8) {
        match a {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    };
    let ((n, width), (a, aw)) = (bits(net.0), bits(ip));
    if width != aw {
        return false;
    }
    let host = u32::from(width - net.1);
    let mask = if host >= 128 { 0 } else { !0u128 << host };
    (n & mask) == (a & mask)
}

/// The policy's verdict: a v4-mapped destination is judged by the IPv4 rules.
fn oracle(rules: &[OracleRule], d: &Dest) -> bool {
    let ip = d.ip.to_canonical();
    rules.iter().any(|r| {
        r.tcp.is_none_or(|t| t == d.tcp)
            && r.ports
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|(lo, hi)| (*lo..=*hi).contains(&d.port)))
            && r.nets.iter().any(|n| contains(*n, ip))
    })
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const NETS: [&str; 12] = [
    "127.0.0.1",
    "127.0.0.0/8",
    "127.8.0.0/16",
    "10.232.0.0/24",
    "10.232.0.0/25",
    "10.232.0.77",
    "10.232.0.128/25",
    "::1",
    "fd00:232::/64",
    "fd00:232::/120",
    "fd00:232::77",
    "fd00:232::1:0/112",
];

fn net(s: &str) -> (IpAddr, u8) {
    match s.split_once('/') {
        Some((a, l)) => (a.parse().expect("ip"), l.parse().expect("len")),
        None => {
            let a: IpAddr = s.parse().expect("ip");
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    }
}

/// A random policy for identity `name`, and the oracle's view of it.
fn random_policy(rng: &mut Rng, name: &str) -> (Identity, Vec<OracleRule>) {
    let mut id = Identity::new(name);
    let mut oracle = Vec::new();
    for _ in 0..rng.below(5) {
        let to: Vec<&str> = (0..=rng.below(3))
            .map(|_| NETS[rng.below(NETS.len())])
            .collect();
        let mut rule = Rule::to(to.clone());
        let ports = match rng.below(5) {
            0 => None,
            1 => Some(vec![(443, 443)]),
            2 => Some(vec![(80, 80), (8080, 8080)]),
            3 => Some(vec![(8000, 9000)]),
            _ => Some(vec![(9000, 9000)]),
        };
        if let Some(ps) = &ports {
            for (lo, hi) in ps {
                rule = if lo == hi {
                    rule.ports([*lo])
                } else {
                    rule.port_range(*lo, *hi)
                };
            }
        }
        let tcp = match rng.below(3) {
            0 => None,
            1 => Some(true),
            _ => Some(false),
        };
        rule = match tcp {
            None => rule,
            Some(true) => rule.tcp(),
            Some(false) => rule.udp(),
        };
        id = id.egress(rule);
        oracle.push(OracleRule {
            nets: to.iter().map(|s| net(s)).collect(),
            ports,
            tcp,
        });
    }
    (id, oracle)
}

fn destinations() -> Vec<Dest> {
    let v4 = [
        "127.0.0.1",
        "127.0.0.2",
        "127.8.0.1",
        "10.232.0.1",
        "10.232.0.77",
        "10.232.0.200",
    ];
    let v6 = ["::1", "fd00:232::1", "fd00:232::77", "fd00:232::1:5"];
    let mapped = ["::ffff:127.0.0.1", "::ffff:10.232.0.77"];
    let mut out = Vec::new();
    for ip in v4.iter().chain(&v6).chain(&mapped) {
        for port in [80, 443, 8080, 8443, 9000] {
            out.push(Dest {
                tcp: false,
                ip: ip.parse().expect("ip"),
                port,
            });
        }
    }
    // TCP to loopback only, where nothing listens on these ports: a refused connection
    // is one the hook let through.
    for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
        for port in [80, 8443] {
            out.push(Dest {
                tcp: true,
                ip: ip.parse().expect("ip"),
                port,
            });
        }
    }
    out
}

/// The soak client under an identity, driven over its stdin.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn start(d: &Daemon, identity: &str, file: &str) -> Self {
        let probe = probe_bin().display().to_string();
        let mut child = d
            .run_command(identity, &["--user", "nobody"], &[&probe, "soak", file])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("soak client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write");
        self.stdin.flush().expect("flush");
        let mut out = String::new();
        self.stdout.read_line(&mut out).expect("read");
        out
    }

    /// Stop the client; its hammer's connects and verdict runs.
    fn end(mut self) -> (u64, Vec<String>) {
        let out = self.ask("end");
        let _ = self.child.wait();
        let mut w = out.split_whitespace();
        assert_eq!(w.next(), Some("hammer"), "{out}");
        let n = w
            .next()
            .and_then(|c| c.strip_prefix("connects="))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        (n, w.map(str::to_owned).collect())
    }
}

/// Whether `seen` (verdicts in order, repeats collapsed) can be what a client saw of
/// `want` (the verdict of each policy in turn): it starts with the first, ends with the
/// last, and never shows a verdict no policy gave at that point.
fn consistent(seen: &str, want: &[bool]) -> bool {
    let mut runs: Vec<char> = want.iter().map(|v| if *v { 'A' } else { 'D' }).collect();
    runs.dedup();
    let mut it = runs.iter();
    seen.chars().all(|c| it.any(|r| *r == c))
        && seen.chars().next() == runs.first().copied()
        && seen.chars().last() == runs.last().copied()
}

#[test]
fn a_million_connects_across_a_hundred_reloads_match_the_oracle() {
    let _routes = Veth::new("ztsoak1", &["10.232.0.1/24", "fd00:232::1/64"]);
    let dir = TestDir::new("soak");
    let dests = destinations();
    let file = dir.path.join("dests");
    let text: String = dests.iter().map(|d| d.line() + "\n").collect();
    std::fs::write(&file, text).expect("dests");
    let file = file.display().to_string();
    let mut rng = Rng(0x5eed_0f5a_4c11_u64);
    let (first, mut rules) = random_policy(&mut rng, "soak");
    let mut text_in_force = first.to_string();
    let mut d = Daemon::start("soak", &first);
    let started = Instant::now();
    let mut client = Client::start(&d, "soak", &file);
    let mut history: Vec<Vec<bool>> = vec![dests.iter().map(|x| oracle(&rules, x)).collect()];
    let passes = 40;
    let mut checked = 0u64;
    for round in 0..=100 {
        if round > 0 {
            // A new policy text each time (an equal one would not be a reload).
            let (next, r) = loop {
                let (next, r) = random_policy(&mut rng, "soak");
                if next.to_string() != text_in_force {
                    break (next, r);
                }
            };
            text_in_force = next.to_string();
            d.reload(&next);
            rules = r;
            history.push(dests.iter().map(|x| oracle(&rules, x)).collect());
        }
        let out = client.ask(&format!("round {round} {passes}"));
        let counts: Vec<usize> = out
            .split_whitespace()
            .skip(2)
            .map(|c| c.parse().expect("count"))
            .collect();
        assert_eq!(counts.len(), dests.len(), "{out}");
        for (i, dest) in dests.iter().enumerate() {
            let want = if oracle(&rules, dest) { passes } else { 0 };
            assert_eq!(
                counts[i],
                want,
                "round {round}: {} allowed {} of {passes} times; the policy says {}:\n{rules:#?}",
                dest.line(),
                counts[i],
                want == passes
            );
        }
        checked += (passes * dests.len()) as u64;
    }
    let (hammered, runs) = client.end();
    assert_eq!(runs.len(), dests.len());
    for (i, dest) in dests.iter().enumerate() {
        let want: Vec<bool> = history.iter().map(|h| h[i]).collect();
        assert!(
            consistent(&runs[i], &want),
            "{}: seen {} while the policies said {:?}",
            dest.line(),
            runs[i],
            want
        );
    }
    let total = checked + hammered;
    assert!(total >= 1_000_000, "{total} connects");
    eprintln!(
        "soak: {total} connects ({checked} in rounds, {hammered} during reloads), 100 reloads, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(d.alive(), "{}", d.log());
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn pinned(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| {
                if e.path().is_dir() {
                    pinned(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn the_daemon_killed_in_a_loop_under_traffic_leaks_nothing_and_never_lets_a_deny_through() {
    let allowed = TcpServer::new("127.0.0.1");
    let denied = TcpServer::new("127.0.0.1");
    let dir = TestDir::new("kill-loop");
    let file = dir.path.join("dests");
    // Both have a listener: a connect the hook lets through to `denied` succeeds.
    std::fs::write(
        &file,
        format!(
            "tcp 127.0.0.1 {}\ntcp 127.0.0.1 {}\n",
            allowed.port, denied.port
        ),
    )
    .expect("dests");
    let file = file.display().to_string();
    let policy = Identity::new("kl").egress(Rule::to(["127.0.0.1"]).ports([allowed.port]).tcp());
    let mut d = Daemon::start("kill-loop", &policy);
    let client = Client::start(&d, "kl", &file);
    let launch_dir = cgroup2_root().join("zt").join("kl");
    let baseline_pins = pinned(&d.pin_dir);
    let cgroups = |d: &Daemon| d.metric("zt_agent_map_entries{map=\"cgroups\"}");
    let mut counts = Vec::new();
    for round in 0..10 {
        d.kill9();
        // While no daemon runs: short workloads start and end, enforced all the same.
        for _ in 0..3 {
            assert_eq!(
                d.run("kl", &["tcp", "127.0.0.1", &denied.port.to_string()])
                    .0,
                DENIED,
                "round {round}"
            );
            assert_eq!(
                d.run("kl", &["tcp", "127.0.0.1", &allowed.port.to_string()])
                    .0,
                OK,
                "round {round}"
            );
        }
        d.restart();
        assert_eq!(
            d.run("kl", &["tcp", "127.0.0.1", &denied.port.to_string()])
                .0,
            DENIED,
            "round {round}"
        );
        // Each daemon, at the same point of its life: started, one run judged, scraped.
        let _ = d.metrics();
        std::thread::sleep(Duration::from_millis(300));
        counts.push(fds(d.pid().expect("pid")));
    }
    let (connects, runs) = client.end();
    assert!(connects > 1_000, "{connects} connects under the loop");
    assert_eq!(
        runs,
        ["A", "D"],
        "verdicts seen for (allowed, denied) under the loop"
    );
    // Nothing left behind: tasks of the identity, launch cgroups, kernel entries,
    // descriptors, pins.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = d.metric("zt_agent_identity_tasks{identity=\"kl\"}");
        let left: Vec<_> = std::fs::read_dir(&launch_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        // The identity's own launch directory stays (and stays enrolled); nothing
        // below it does.
        let dirs = f64::from(u8::from(launch_dir.exists()));
        if tasks == 0.0 && left.is_empty() && cgroups(&d) == dirs {
            break;
        }
        assert!(
            Instant::now() < end,
            "left behind: {tasks} tasks, cgroups {left:?}, {} cgroup entries for {dirs} directories\n{}",
            cgroups(&d),
            String::from_utf8_lossy(
                &std::process::Command::new("bpftool")
                    .args(["map", "dump", "pinned"])
                    .arg(d.pin_dir.join("maps/ZT_CGROUPS"))
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (first, last) = (counts[0], counts[counts.len() - 1]);
    let spread = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0);
    assert!(
        last <= first + 1 && spread <= 3,
        "descriptors per restart: {counts:?}"
    );
    assert_eq!(pinned(&d.pin_dir), baseline_pins, "pins");
    assert_eq!(
        d.metric("zt_agent_policy_reloads_total{result=\"failure\"}"),
        0.0
    );
}
