//! One thin file per command: arguments in, a library call, an exit code out
//! (sysexits: see `exit`).

mod approve;
mod audit;
mod daemon;
mod deny;
mod generate;
mod grant;
mod grants;
mod policy;
mod ps;
mod requests;
mod review;
mod revoke;
mod run;
mod status;
mod svid;
mod why;

use crate::cli::{AuditCommand, Cli, Command, PolicyCommand};

#[must_use]
pub fn execute(cli: Cli) -> u8 {
    match cli.command {
        Command::Daemon(args) => daemon::execute(*args),
        Command::Run(args) => run::execute(&args),
        Command::Ps(args) => ps::execute(&args),
        Command::Status { json, dirs } => status::execute(&dirs, json),
        Command::Svid(args) => svid::execute(&args),
        Command::Policy(PolicyCommand::Check { dir }) => policy::check(&dir),
        Command::Policy(PolicyCommand::Suggest(args)) => policy::suggest(&args),
        Command::Grant(args) => grant::execute(args),
        Command::Review(args) => review::execute(&args),
        Command::Grants { json, dirs } => grants::execute(&dirs, json),
        Command::Revoke(args) => revoke::execute(args),
        Command::Requests { json, dirs } => requests::execute(&dirs, json),
        Command::Approve {
            id,
            duration,
            reason,
            dirs,
        } => approve::execute(&dirs, id, duration, reason),
        Command::Deny { id, reason, dirs } => deny::execute(&dirs, id, reason),
        Command::Why(args) => why::execute(args),
        Command::Audit(AuditCommand::Verify { files }) => audit::verify(&files),
        Command::Generate { dir } => generate::execute(&dir),
    }
}
