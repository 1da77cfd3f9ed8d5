//! `zt-agent generate DIR` (hidden): the shell completions and the man page of this
//! very command line, for packages, so they never drift from it.

use std::path::Path;

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::exit;

pub fn execute(dir: &Path) -> u8 {
    match write(dir) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("zt-agent generate {}: {e}", dir.display());
            exit::OSERR
        }
    }
}

fn write(dir: &Path) -> std::io::Result<()> {
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "zt-agent", &completions)?;
    }
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    // The page of the command, and one per subcommand (zt-agent-daemon.1, ...).
    clap_mangen::generate_to(Cli::command(), &man)?;
    Ok(())
}
