//! `zt-agent run --identity NAME -- CMD`.

use crate::cli::RunArgs;
use crate::{exit, launch};

pub fn execute(args: &RunArgs) -> u8 {
    match launch::launch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zt-agent run: {}", exit::chain(&e));
            e.exit_code()
        }
    }
}
