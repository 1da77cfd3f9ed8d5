//! `zt-agent deny REQUEST_ID [--reason TEXT]`.

use crate::cli::Dirs;
use crate::grants::client;
use crate::grants::control::Request;

pub fn execute(dirs: &Dirs, id: String, reason: Option<String>) -> u8 {
    client::run(
        &dirs.state_dir,
        "deny",
        &Request::Deny { id, reason },
        |r| {
            println!("denied {}", r["request"].as_str().unwrap_or_default());
        },
    )
}
