//! One thin file per command: arguments in, a library call, an exit code out
//! (sysexits: see `exit`).

mod daemon;
mod generate;
mod policy;
mod ps;
mod run;
mod status;

use crate::cli::{Cli, Command, PolicyCommand};

#[must_use]
pub fn execute(cli: Cli) -> u8 {
    match cli.command {
        Command::Daemon(args) => daemon::execute(args),
        Command::Run(args) => run::execute(&args),
        Command::Ps(args) => ps::execute(&args),
        Command::Status { json, dirs } => status::execute(&dirs, json),
        Command::Policy(PolicyCommand::Check { dir }) => policy::check(&dir),
        Command::Generate { dir } => generate::execute(&dir),
    }
}
