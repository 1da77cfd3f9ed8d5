//! `zt-agent revoke GRANT_ID | --identity NAME`.

use crate::cli::RevokeArgs;
use crate::grants::client;
use crate::grants::control::Request;

pub fn execute(a: RevokeArgs) -> u8 {
    let req = Request::Revoke {
        id: a.id,
        identity: a.identity,
    };
    client::run(&a.dirs.state_dir, "revoke", &req, |r| {
        for id in r["revoked"].as_array().into_iter().flatten() {
            println!("revoked {}", id.as_str().unwrap_or_default());
        }
    })
}
