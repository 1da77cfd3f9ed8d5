//! The SPIFFE Workload API: the official SPIFFE client for Python (py-spiffe) inside
//! `zt-agent run` fetches X.509- and JWT-SVIDs of its own identity; they work in mutual
//! TLS and validate against the bundles; callers without an identity, quarantined
//! ones, and whoever holds the connection of a task that exited get nothing; and no
//! local user holding connections keeps a workload waiting for its SVID.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use zt_agent_tests::{
    Cgroup, Daemon, Identity, Rule, Selector, TestDir, code_and_output, probe_bin,
};

/// The Python environment scripts/setup.sh makes with the `spiffe` package.
const VENV_PYTHON: &str = "/opt/zt-agent/test-venv/bin/python3";
const VENV_SITE: &str = "/opt/zt-agent/test-venv/lib/python3.11/site-packages";
const CLIENT: &str = include_str!("../py/spiffe_client.py");
const PEER: &str = include_str!("../py/spiffe_peer.py");

fn require_client() {
    assert!(
        Path::new(VENV_PYTHON).exists(),
        "{VENV_PYTHON} is missing: run scripts/setup.sh (it installs the SPIFFE client for Python)"
    );
}

/// The test's files: the two scripts.
fn scripts(name: &str) -> (TestDir, String, String) {
    require_client();
    let dir = TestDir::new(name);
    let client = dir.script("spiffe_client.py", CLIENT);
    let peer = dir.script("spiffe_peer.py", PEER);
    (dir, client, peer)
}

fn json_of(out: &Output) -> (i32, serde_json::Value, String) {
    let (code, text) = code_and_output(out);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
        .unwrap_or_default();
    (
        code,
        serde_json::from_str(&line).unwrap_or(serde_json::Value::Null),
        text,
    )
}

/// The client script under `zt-agent run --identity ID --user nobody`.
fn run_client(
    d: &Daemon,
    identity: &str,
    client: &str,
    args: &[&str],
) -> (i32, serde_json::Value, String) {
    let cmd: Vec<&str> = [VENV_PYTHON, client]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let out = d
        .run_command(identity, &["--user", "nobody"], &cmd)
        .output()
        .expect("zt-agent run");
    json_of(&out)
}

/// The client script unenrolled, as root, with the endpoint `socket`.
fn client_outside(
    python: &str,
    socket: &Path,
    client: &str,
    args: &[&str],
) -> (i32, serde_json::Value, String) {
    // `-S`: the venv's packages only, never a Debian python3-* module of the same
    // name from dist-packages (a host's python3-openssl breaks the venv's `pem`).
    let out = Command::new(python)
        .arg("-S")
        .arg(client)
        .args(args)
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )
        .env("PYTHONPATH", VENV_SITE)
        .output()
        .expect("python");
    json_of(&out)
}

fn peer(peer: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(VENV_PYTHON)
        .arg(peer)
        .args(args)
        .output()
        .expect("python");
    json_of(&out)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `zt-agent svid IDENTITY --json` once `ready` holds for it (the daemon writes its
/// record of issued SVIDs within a second).
fn svid_shown(
    d: &Daemon,
    identity: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // The record is written just after the SVID is sent: until then it may be
        // missing, or show the one before.
        last = svid_command(d, identity);
        if let Ok(v) = &last
            && ready(v)
        {
            return v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "zt-agent svid does not show the latest SVIDs: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `zt-agent svid IDENTITY --json`.
fn svid_command(d: &Daemon, identity: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(zt_agent_tests::agent_bin())
        .args(["svid", identity, "--json"])
        .arg("--state-dir")
        .arg(&d.state_dir)
        .output()
        .expect("zt-agent svid");
    if !out.status.success() {
        return Err(format!(
            "zt-agent svid: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_slice(&out.stdout).expect("svid json"))
}

/// A certificate serial as hex without leading zeros (Python prints it so).
fn serial(v: &serde_json::Value) -> String {
    v.as_str()
        .unwrap_or_default()
        .trim_start_matches('0')
        .to_owned()
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_enrolled_workload_gets_x509_and_jwt_svids_of_its_own_identity() {
    let (dir, client, peer_py) = scripts("spiffe-fetch");
    let policy = Identity::new("sp-fetch-a")
        .spiffe_id("spiffe://example.org/agent/a")
        .and(Identity::new("sp-fetch-b"));
    let d = Daemon::start("spiffe-fetch", &policy);

    // X.509: the SPIFFE ID of the identity, an hour's life, the bundle of its domain.
    let before = now();
    let (code, x, out) = run_client(&d, "sp-fetch-a", &client, &["x509"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(x["spiffe_id"], "spiffe://example.org/agent/a", "{x}");
    let life = x["not_after"].as_f64().unwrap_or(0.0) - x["not_before"].as_f64().unwrap_or(0.0);
    assert!(
        (3_590.0..=3_600.0).contains(&life),
        "X.509-SVID lifetime {life}"
    );
    assert!(x["not_before"].as_f64().unwrap_or(0.0) >= before.floor() - 1.0);
    assert!(
        x["bundles"]["example.org"]
            .as_array()
            .is_some_and(|b| !b.is_empty()),
        "{x}"
    );
    // The run id is the run's cgroup name.
    let subject = x["subject"].as_str().unwrap_or_default();
    assert!(subject.contains("OU=run "), "{subject}");

    // JWT: sub, aud and a five-minute life, validated by the official client against
    // the fetched bundle and by the API itself.
    let issued_at = now();
    let (code, j, out) = run_client(&d, "sp-fetch-a", &client, &["jwt", "db.example.org"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(j["spiffe_id"], "spiffe://example.org/agent/a");
    assert_eq!(j["audience"], serde_json::json!(["db.example.org"]));
    assert_eq!(j["validated_by_api"], "spiffe://example.org/agent/a");
    let done = now();
    let exp = j["expiry"].as_f64().unwrap_or(0.0);
    assert!(
        exp >= issued_at.floor() + 300.0 && exp <= done.ceil() + 300.0,
        "JWT-SVID expires at {exp}, asked for between {issued_at} and {done}"
    );
    // Independently: PyJWT with the bundle `zt-agent svid` shows.
    let shown = svid_shown(&d, "sp-fetch-a", |v| {
        serial(&v["x509_svid"]["serial"]) == serial(&x["serial"]) && v["jwt_svid"].is_object()
    });
    let token = dir.path.join("token");
    std::fs::write(&token, j["token"].as_str().unwrap_or_default()).expect("token");
    let jwks = dir.path.join("jwks.json");
    std::fs::write(&jwks, shown["jwt_bundle"].to_string()).expect("jwks");
    let t = token.display().to_string();
    let k = jwks.display().to_string();
    let (code, claims, out) = peer(&peer_py, &["verify", &t, &k, "db.example.org"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(claims["sub"], "spiffe://example.org/agent/a");
    assert_eq!(claims["aud"], serde_json::json!(["db.example.org"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0),
        300
    );
    // The run id: the run's cgroup name, `<launcher pid>-<nanoseconds>`.
    let run_id = claims["run_id"].as_str().unwrap_or_default();
    assert!(
        run_id
            .split_once('-')
            .is_some_and(|(p, n)| p.parse::<u32>().is_ok() && n.parse::<u128>().is_ok()),
        "{claims}"
    );
    // Another audience does not validate.
    let (code, _, _) = peer(&peer_py, &["verify", &t, &k, "web.example.org"]);
    assert_ne!(code, 0, "a token for db validated for web");

    // What was issued is shown to root, counted and reported.
    assert_eq!(shown["spiffe_id"], "spiffe://example.org/agent/a");
    assert_eq!(
        serial(&shown["x509_svid"]["serial"]),
        serial(&x["serial"]),
        "{shown}"
    );
    assert_eq!(
        shown["jwt_svid"]["audience"],
        serde_json::json!(["db.example.org"])
    );
    let m = d.metrics();
    assert!(
        m.contains(r#"zt_agent_svids_issued_total{identity="sp-fetch-a",type="x509"}"#)
            && m.contains(r#"zt_agent_svids_issued_total{identity="sp-fetch-a",type="jwt"} 1"#),
        "{m}"
    );
    let ev = d.wait_event("x509 issuance", |e| {
        e["kind"] == "svid" && e["svid_type"] == "x509" && e["verdict"] == "allow"
    });
    assert_eq!(ev["identity"], "sp-fetch-a", "{ev}");
    assert_eq!(ev["spiffe_id"], "spiffe://example.org/agent/a", "{ev}");
    assert_eq!(serial(&ev["serial"]), serial(&x["serial"]), "{ev}");
    assert!(ev["run_id"].as_str().is_some_and(|r| !r.is_empty()), "{ev}");

    // The default SPIFFE ID of an identity without one.
    let (code, xb, out) = run_client(&d, "sp-fetch-b", &client, &["x509"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(xb["spiffe_id"], "spiffe://zt-agent.local/sp-fetch-b");
}

#[test]
fn mutual_tls_accepts_the_workloads_svid_and_rejects_another_identity() {
    let (dir, client, peer_py) = scripts("spiffe-tls");
    let port_file = dir.path.join("port").display().to_string();
    let bundle = dir.path.join("bundle.pem");
    // The server's port is known only once it listens; allow the ephemeral range.
    let egress = || Rule::to(["127.0.0.1"]).port_range(1024, 65_535).tcp();
    let policy = Identity::new("sp-tls-a")
        .spiffe_id("spiffe://example.org/tls/a")
        .egress(egress())
        .and(
            Identity::new("sp-tls-b")
                .spiffe_id("spiffe://example.org/tls/b")
                .egress(egress()),
        );
    let d = Daemon::start("spiffe-tls", &policy);
    // The bundle, as the workloads get it.
    let (code, x, out) = run_client(&d, "sp-tls-a", &client, &["x509"]);
    assert_eq!(code, 0, "{out}");
    let pems: Vec<String> = x["bundles"]["example.org"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    std::fs::write(&bundle, pems.concat()).expect("bundle");
    let mut server = Command::new(VENV_PYTHON)
        .arg(&peer_py)
        .args([
            "server",
            &bundle.display().to_string(),
            "spiffe://example.org/tls/a",
            &port_file,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server");
    let port = eventually("the TLS server's port", || {
        std::fs::read_to_string(&port_file).ok()
    });

    let (code, a, out) = run_client(&d, "sp-tls-a", &client, &["tls", "127.0.0.1", &port]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(a["answer"], "welcome", "A's SVID was not let in: {a}");
    let (code, b, out) = run_client(&d, "sp-tls-b", &client, &["tls", "127.0.0.1", &port]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(b["spiffe_id"], "spiffe://example.org/tls/b");
    assert_eq!(b["answer"], "forbidden", "B's SVID was let in as A: {b}");
    // A certificate that names A but is not from the bundle fails the handshake.
    let (_, f, out) = peer(&peer_py, &["forged", "spiffe://example.org/tls/a", &port]);
    assert!(
        f["answer"]
            .as_str()
            .is_some_and(|s| s.starts_with("refused")),
        "a forged certificate got in: {out}"
    );
    let _ = server.kill();
    let out = server.wait_with_output().expect("server output");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains(r#""let_in": true"#), "{log}");
    assert!(log.contains(r#""handshake": "failed""#), "{log}");
}

#[test]
fn unenrolled_and_quarantined_callers_are_refused() {
    let (dir, client, _) = scripts("spiffe-refuse");
    let qpython = dir.copy(Path::new("/usr/bin/python3.11"), "qpython");
    let policy = Identity::new("sp-refuse").and(
        Identity::new("sp-refuse-q").selector(Selector::exe(&qpython).sha256("ab".repeat(32))),
    );
    let d = Daemon::start("spiffe-refuse", &policy);
    d.wait_event("digest mismatch report", |e| {
        e["kind"] == "file" && e["identity"] == "sp-refuse-q"
    });

    let (code, out, text) = client_outside(VENV_PYTHON, &d.workload_socket, &client, &["x509"]);
    assert_eq!(code, 3, "an unenrolled process got an SVID: {text}");
    let err = out["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("unenrolled"),
        "{err}"
    );
    let (code, out, text) =
        client_outside(VENV_PYTHON, &d.workload_socket, &client, &["jwt", "db"]);
    assert_eq!(code, 3, "an unenrolled process got a JWT-SVID: {text}");
    assert!(
        out["error"]
            .as_str()
            .unwrap_or_default()
            .contains("PERMISSION_DENIED")
    );

    // Exec'd a selected binary that fails its digest: quarantined, refused.
    let (code, out, text) = client_outside(&qpython, &d.workload_socket, &client, &["x509"]);
    assert_eq!(code, 3, "a quarantined process got an SVID: {text}");
    let err = out["error"].as_str().unwrap_or_default();
    assert!(err.contains("quarantined"), "{err}");

    let ev = d.wait_event("quarantine refusal", |e| {
        e["kind"] == "svid" && e["reason"] == "quarantined"
    });
    assert_eq!(ev["verdict"], "deny");
    assert_eq!(ev["identity"], "quarantine");
    let ev = d.wait_event("unenrolled refusal", |e| {
        e["kind"] == "svid" && e["reason"] == "unenrolled"
    });
    assert_eq!(ev["verdict"], "deny");
    assert!(d.metric(r#"zt_agent_svid_refusals_total{reason="unenrolled"}"#) >= 2.0);
    assert!(d.metric(r#"zt_agent_svid_refusals_total{reason="quarantined"}"#) >= 1.0);
    // Nothing was issued to anyone.
    assert!(!d.metrics().contains("zt_agent_svids_issued_total{"));

    // The security header is required (a raw gRPC call without it).
    let status = raw_call_without_header(&d.workload_socket);
    assert!(status.contains("grpc-status: 3"), "{status}");
}

/// One FetchJWTSVID call over HTTP/2 without the `workload.spiffe.io` header, through
/// the grpc library's channel with the metadata left out; returns what came back.
fn raw_call_without_header(socket: &Path) -> String {
    let script = format!(
        r#"
import grpc
from spiffe._proto import workload_pb2, workload_pb2_grpc
ch = grpc.insecure_channel("unix://{}")
stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(ch)
try:
    stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["x"]), timeout=10)
    print("answered")
except grpc.RpcError as e:
    print("grpc-status:", e.code().value[0], e.details())
"#,
        socket.display()
    );
    let out = Command::new(VENV_PYTHON)
        .args(["-c", &script])
        .output()
        .expect("python");
    code_and_output(&out).1
}

#[test]
fn a_process_that_takes_over_an_exited_tasks_pid_gets_nothing_of_it() {
    let (dir, client, peer_py) = scripts("spiffe-reuse");
    let cg = Cgroup::new("spiffe-reuse");
    let policy = Identity::new("sp-reuse")
        .spiffe_id("spiffe://example.org/reuse")
        .selector(Selector::cgroup(&cg.rel));
    let d = Daemon::start("spiffe-reuse", &policy);
    let sock = d.workload_socket.display().to_string();

    // Control: a task of the identity connects, a helper relays a client over its
    // connection while it runs, and the client gets the identity's SVID.
    let relay_ok = dir.path.join("relay-ok.sock").display().to_string();
    let procs = cg.path.join("cgroup.procs");
    let mut holder = Command::new(VENV_PYTHON);
    holder
        .args([peer_py.as_str(), "relay", &sock, &relay_ok, "stay"])
        .stdout(Stdio::piped());
    // SAFETY: one file write between fork and exec.
    unsafe { holder.pre_exec(move || std::fs::write(&procs, b"0")) };
    let mut holder = holder.spawn().expect("relay holder");
    let relay_ok_path = Path::new(&relay_ok).to_path_buf();
    eventually("the relay", || relay_ok_path.exists().then_some(()));
    let (code, x, out) = client_outside(VENV_PYTHON, &relay_ok_path, &client, &["x509"]);
    assert_eq!(code, 0, "the relay of a live task did not work: {out}");
    assert_eq!(x["spiffe_id"], "spiffe://example.org/reuse");
    let _ = holder.kill();
    let _ = holder.wait();

    // An unenrolled process connects, leaves the connection to a relay, and exits.
    let relay_path = dir.path.join("relay.sock");
    let relay = relay_path.display().to_string();
    let out = Command::new(VENV_PYTHON)
        .args([peer_py.as_str(), "relay", &sock, &relay])
        .output()
        .expect("relay");
    let (_, pids, text) = json_of(&out);
    let dead = i32::try_from(pids["connected_pid"].as_i64().unwrap_or(0)).unwrap_or(0);
    let relay_pid = i32::try_from(pids["relay_pid"].as_i64().unwrap_or(0)).unwrap_or(0);
    assert!(dead > 0 && relay_pid > 0, "{text}");
    // Its pid now goes to a new task of the identity (clone3 with set_tid).
    let victim = cg
        .clone3_exec(Path::new("/usr/bin/sleep"), &["30"], Some(dead))
        .expect("clone3 with the exited task's pid");
    assert_eq!(victim, dead);
    let enrolled = d.ps();
    let holds = enrolled["enrolled"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| t["pid"] == i64::from(dead) && t["identity"] == "sp-reuse")
    });
    assert!(holds, "pid {dead} is not the identity's now: {enrolled}");

    // The connection of the exited task is worth nothing, whoever has its pid now.
    let (code, out, text) = client_outside(VENV_PYTHON, &relay_path, &client, &["x509"]);
    assert_eq!(code, 3, "the exited task's connection got an SVID: {text}");
    let err = out["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("task_exited"),
        "{err}"
    );
    let ev = d.wait_event("task_exited refusal", |e| {
        e["kind"] == "svid" && e["reason"] == "task_exited"
    });
    assert_eq!(ev["verdict"], "deny");
    // SAFETY: signalling and reaping our own children.
    unsafe {
        libc::kill(victim, libc::SIGKILL);
        libc::waitpid(victim, std::ptr::null_mut(), 0);
        libc::kill(relay_pid, libc::SIGKILL);
    }
}

#[test]
fn identities_never_get_each_others_svids() {
    let (_dir, client, _) = scripts("spiffe-apart");
    let policy = Identity::new("sp-apart-a")
        .spiffe_id("spiffe://example.org/apart/a")
        .and(Identity::new("sp-apart-b").spiffe_id("spiffe://example.org/apart/b"));
    let d = Daemon::start("spiffe-apart", &policy);
    let children: Vec<(&str, std::process::Child)> = (0..6)
        .map(|i| {
            let id = if i % 2 == 0 {
                "sp-apart-a"
            } else {
                "sp-apart-b"
            };
            let what: &[&str] = if i < 4 { &["x509"] } else { &["jwt", "aud"] };
            let cmd: Vec<&str> = [VENV_PYTHON, client.as_str()]
                .into_iter()
                .chain(what.iter().copied())
                .collect();
            let c = d
                .run_command(id, &["--user", "nobody"], &cmd)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run");
            (id, c)
        })
        .collect();
    for (id, c) in children {
        let (code, v, out) = json_of(&c.wait_with_output().expect("wait"));
        assert_eq!(code, 0, "{out}");
        let want = if id == "sp-apart-a" {
            "spiffe://example.org/apart/a"
        } else {
            "spiffe://example.org/apart/b"
        };
        assert_eq!(v["spiffe_id"], want, "{id} got {v}");
    }
}

#[test]
fn svids_rotate_on_the_stream_and_keys_survive_a_restart() {
    let (dir, client, peer_py) = scripts("spiffe-rotate");
    let policy = Identity::new("sp-rotate").spiffe_id("spiffe://example.org/rotate");
    let mut d = Daemon::start_with(
        "spiffe-rotate",
        &policy,
        &["--x509-svid-ttl", "4s", "--jwt-svid-ttl", "60s"],
    );
    // A 4 s SVID is renewed at half its life: the stream brings new ones in time.
    let (code, s, out) = run_client(&d, "sp-rotate", &client, &["stream", "5"]);
    assert_eq!(code, 0, "{out}");
    let got = s["received"].as_array().cloned().unwrap_or_default();
    assert!(got.len() >= 2, "no rotation on the stream: {s}");
    assert!(got.iter().all(|r| r.get("error").is_none()), "{s}");
    let first_expiry = got[0]["not_after"].as_f64().unwrap_or(0.0);
    assert!(
        got[1]["at"].as_f64().unwrap_or(f64::MAX) < first_expiry,
        "renewed only after expiry: {s}"
    );
    assert_ne!(got[0]["serial"], got[1]["serial"]);

    // Keys and bundles before and after a restart.
    let (code, jwt, out) = run_client(&d, "sp-rotate", &client, &["jwt", "db"]);
    assert_eq!(code, 0, "{out}");
    let before = svid_command(&d, "sp-rotate").expect("svid record");
    d.restart();
    let (code, x, out) = run_client(&d, "sp-rotate", &client, &["x509"]);
    assert_eq!(code, 0, "{out}");
    // The new daemon's own record, not the one its predecessor left.
    let after = svid_shown(&d, "sp-rotate", |v| {
        serial(&v["x509_svid"]["serial"]) == serial(&x["serial"])
    });
    assert_eq!(
        before["x509_bundle"], after["x509_bundle"],
        "the CA changed"
    );
    assert_eq!(
        before["jwt_bundle"], after["jwt_bundle"],
        "the JWT keys changed"
    );
    assert_eq!(
        x["bundles"]["example.org"],
        serde_json::json!(after["x509_bundle"]),
        "the bundle served is not the one shown"
    );
    // A token from before the restart still validates with the bundle after it.
    let token = dir.path.join("token");
    std::fs::write(&token, jwt["token"].as_str().unwrap_or_default()).expect("token");
    let jwks = dir.path.join("jwks.json");
    std::fs::write(&jwks, after["jwt_bundle"].to_string()).expect("jwks");
    let (code, claims, out) = peer(
        &peer_py,
        &[
            "verify",
            &token.display().to_string(),
            &jwks.display().to_string(),
            "db",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(claims["sub"], "spiffe://example.org/rotate");
    // The keys are root's alone.
    let keys = d.state_dir.join("svid").join("keys.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::symlink_metadata(&keys)
            .expect("key file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
}

#[test]
fn an_operators_intermediate_signs_and_its_root_is_the_bundle() {
    let (dir, client, peer_py) = scripts("spiffe-opca");
    let (code, ca, out) = peer(&peer_py, &["ca", &dir.path.display().to_string()]);
    assert_eq!(code, 0, "{out}");
    let chain = dir.path.join("chain.pem").display().to_string();
    let key = dir.path.join("key.pem").display().to_string();
    let policy = Identity::new("sp-opca").spiffe_id("spiffe://example.org/opca");
    let d = Daemon::start_with(
        "spiffe-opca",
        &policy,
        &["--svid-ca-cert", &chain, "--svid-ca-key", &key],
    );
    let (code, x, out) = run_client(&d, "sp-opca", &client, &["x509"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(x["spiffe_id"], "spiffe://example.org/opca");
    // The SVID, then the intermediate; the root alone is the bundle.
    let got = x["chain"].as_array().cloned().unwrap_or_default();
    assert_eq!(got.len(), 2, "{x}");
    assert_eq!(got[1], ca["intermediate"]);
    assert_eq!(x["bundles"]["example.org"], serde_json::json!([ca["root"]]));
    // The chain verifies up to the root, for a TLS client certificate.
    let (leaf, inter, root) = (
        dir.path.join("leaf.pem"),
        dir.path.join("inter.pem"),
        dir.path.join("root.pem"),
    );
    std::fs::write(&leaf, got[0].as_str().unwrap_or_default()).expect("leaf");
    std::fs::write(&inter, got[1].as_str().unwrap_or_default()).expect("intermediate");
    std::fs::write(&root, ca["root"].as_str().unwrap_or_default()).expect("root");
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(out.status.success(), "{}", code_and_output(&out).1);
    // Nothing of the daemon's own CA was made.
    assert!(
        !d.state_dir.join("svid").join("keys.json").exists() || {
            let text = std::fs::read_to_string(d.state_dir.join("svid").join("keys.json"))
                .unwrap_or_default();
            serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|v| v["x509"].as_array().is_some_and(Vec::is_empty))
        }
    );
}

/// Connections held by `zt-probe hold-unix` as the unprivileged, unenrolled nobody;
/// killed on drop.
struct Holder {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Holder {
    /// Open `n` connections to `socket`, send `bytes` on each, keep them `secs` s;
    /// returns once they are open, with the line saying how many.
    fn start(socket: &Path, n: usize, secs: u64, bytes: &[u8]) -> (Self, String) {
        let hex: String = if bytes.is_empty() {
            "-".to_owned()
        } else {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut child = Command::new(probe_bin())
            .args(["as-uid", "65534", "hold-unix"])
            .arg(socket)
            .args([n.to_string(), secs.to_string(), hex])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("zt-probe hold-unix");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut h = Self { child, out };
        let line = h.line();
        (h, line)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read");
        line.trim().to_owned()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The timed X.509-SVID fetch of the official client under the identity.
fn timed_fetch(d: &Daemon, identity: &str, client: &str) -> (Duration, serde_json::Value) {
    let t = Instant::now();
    let (code, x, out) = run_client(d, identity, client, &["x509"]);
    assert_eq!(code, 0, "{out}");
    (t.elapsed(), x)
}

#[test]
fn connections_held_by_an_unenrolled_user_never_keep_a_workload_waiting() {
    let (_dir, client, _) = scripts("spiffe-hold");
    let policy = Identity::new("sp-hold").spiffe_id("spiffe://example.org/hold");
    let mut d = Daemon::start("spiffe-hold", &policy);
    let sock = d.workload_socket.clone();
    let (calm, _) = timed_fetch(&d, "sp-hold", &client);

    // nobody opens half an HTTP/2 client preface on more connections than the
    // unenrolled pool holds, then more idle ones than the global cap, and keeps them.
    let (mut half, held) = Holder::start(&sock, 200, 10, b"PRI * HTTP/2.0\r\n");
    assert_eq!(held, "held 200 failed 0");
    let (mut idle, held) = Holder::start(&sock, 1_100, 10, b"");
    assert_eq!(held, "held 1100 failed 0");

    // The workload's SVID still comes at once.
    let (took, x) = timed_fetch(&d, "sp-hold", &client);
    assert_eq!(x["spiffe_id"], "spiffe://example.org/hold", "{x}");
    assert!(
        took < Duration::from_secs(5),
        "the SVID took {took:?} with the connections held ({calm:?} without)"
    );
    // A stream that sent its request is never cut for idling: it outlives the
    // cut-off (5 s), while nobody's idle connections are cut around it.
    let (code, s, out) = run_client(&d, "sp-hold", &client, &["stream", "8"]);
    assert_eq!(code, 0, "{out}");
    let got = s["received"].as_array().cloned().unwrap_or_default();
    assert_eq!(got.len(), 1, "the stream was cut or sent twice: {s}");
    assert!(got[0].get("error").is_none(), "{s}");

    // Every one of nobody's connections was closed: past its share, or idle.
    assert_eq!(half.line(), "open 0");
    assert_eq!(idle.line(), "open 0");
    let share = d.metric(r#"zt_agent_svid_connections_evicted_total{reason="share"}"#);
    let cut = d.metric(r#"zt_agent_svid_connections_evicted_total{reason="idle"}"#);
    assert!(share >= 1_200.0, "{share} pushed out past the share");
    assert!(cut >= 4.0, "{cut} cut off idle");
    // Half a preface alone is cut off too, on its own.
    let (mut few, held) = Holder::start(&sock, 4, 7, b"PRI * HTTP/2.0\r\n");
    assert_eq!(held, "held 4 failed 0");
    assert_eq!(few.line(), "open 0");
    let cut_after = d.metric(r#"zt_agent_svid_connections_evicted_total{reason="idle"}"#);
    assert!(
        cut_after >= cut + 4.0,
        "{cut} then {cut_after} cut off idle"
    );
    assert_eq!(
        d.metric(r#"zt_agent_svid_connections_evicted_total{reason="global"}"#),
        0.0
    );

    // The daemon is up, and serves as before.
    assert!(d.alive(), "the daemon stopped:\n{}", d.log());
    assert!(!d.log().contains("part failed"), "{}", d.log());
    let (took, _) = timed_fetch(&d, "sp-hold", &client);
    assert!(took < Duration::from_secs(5), "{took:?}");
}
