use std::process::ExitCode;

use clap::Parser as _;
use zt_agent::{cli, daemon, exit, policy, run};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        cli::Command::Daemon(args) => daemon::main(args),
        cli::Command::Run(args) => run::main(&args),
        cli::Command::Policy(cli::PolicyCommand::Check { dir }) => match policy::load_dir(&dir) {
            Ok(p) => match policy::compile(&p, &policy::assign_ids(&Default::default(), &p)) {
                Ok(c) => {
                    println!(
                        "{}: {} identities, policy sha256 {}",
                        dir.display(),
                        c.identities.len(),
                        c.sha256
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!("{e}");
                    exit::CONFIG
                }
            },
            Err(errs) => {
                eprint!("{errs}");
                exit::CONFIG
            }
        },
    };
    ExitCode::from(code)
}
