use std::process::ExitCode;

use clap::Parser as _;
use zt_agent::identity::resolve::{self, HostFiles};
use zt_agent::{cli, daemon, exit, policy, ps, run};

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
        cli::Command::Ps(args) => ps::main(&args),
        cli::Command::Status { json, dirs } => ps::status(&dirs, json),
        cli::Command::Policy(cli::PolicyCommand::Check { dir }) => match policy::load_dir(&dir) {
            Ok(p) => match policy::compile(&p, &policy::assign_ids(&Default::default(), &p)) {
                Ok(c) => {
                    // Resolve the files too: a missing binary or a digest that does not
                    // match this host is worth knowing before the daemon loads it.
                    let ids = policy::assign_ids(&Default::default(), &p);
                    let mut files = HostFiles::default();
                    let _ = files.refresh_mounts();
                    match resolve::resolve(&p, &ids, &mut files) {
                        Ok(r) => {
                            for n in &r.notes {
                                eprintln!(
                                    "warning: {}: {} `{}`: {}",
                                    n.location, n.field, n.path, n.message
                                );
                            }
                        }
                        Err(errs) => {
                            for e in errs {
                                eprintln!("{e}");
                            }
                            return ExitCode::from(exit::CONFIG);
                        }
                    }
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
