//! `zt-agent approve REQUEST_ID [--for DURATION] [--reason TEXT]`.

use crate::cli::Dirs;
use crate::grants::client;
use crate::grants::control::Request;

pub fn execute(dirs: &Dirs, id: String, duration: Option<String>, reason: Option<String>) -> u8 {
    let req = Request::Approve {
        id,
        duration,
        reason,
    };
    client::run(&dirs.state_dir, "approve", &req, |r| {
        println!("{}", r["grant"].as_str().unwrap_or_default());
    })
}
