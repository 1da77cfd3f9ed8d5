//! `zt-agent status [--json]`.

use crate::cli::Dirs;
use crate::{exit, inventory};

pub fn execute(dirs: &Dirs, json: bool) -> u8 {
    let st = match inventory::status(dirs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zt-agent status: {}", exit::chain(&e));
            return exit::UNAVAILABLE;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
        return exit::OK;
    }
    println!("enforcing:      yes (pinned at {})", st.pin_dir);
    println!(
        "daemon:         {}",
        match (st.daemon_pid, st.daemon_running) {
            (Some(p), true) => format!("running (pid {p})"),
            (Some(p), false) => format!("not running (last pid {p}); the kernel keeps enforcing"),
            _ => "unknown".to_owned(),
        }
    );
    println!("policy sha256:  {}", st.policy_sha256);
    println!("identities:     {}", st.identities.join(", "));
    println!(
        "exec guard:     {} ({})",
        st.exec_guard.as_str(),
        st.exec_guard.describe()
    );
    println!(
        "metrics:        {}",
        st.metrics_addr.as_deref().unwrap_or("-")
    );
    println!(
        "dns resolver:   {}",
        st.dns_port.map_or_else(
            || "-".to_owned(),
            |p| format!(
                "127.0.0.1:{p} and [::1]:{p} (enrolled tasks' DNS, UDP and TCP port 53, goes here)"
            )
        )
    );
    println!("enrolled tasks: {}", st.enrolled_tasks);
    exit::OK
}
