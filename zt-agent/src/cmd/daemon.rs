//! `zt-agent daemon` and `zt-agent daemon --teardown`.

use crate::cli::DaemonArgs;
use crate::{daemon, exit};

pub fn execute(args: DaemonArgs) -> u8 {
    let result = if args.teardown {
        daemon::teardown(&args)
    } else {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("zt-agent: tokio runtime: {e}");
                return exit::OSERR;
            }
        };
        rt.block_on(daemon::run(args))
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("zt-agent daemon: {}", exit::chain(&e));
            e.exit_code()
        }
    }
}
