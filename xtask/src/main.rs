//! Tasks cargo alone cannot do. Run through `./x`, which installs prerequisites first.
//!
//!   cargo xtask daemon [ARGS]   build and run the agent with the policies in policies/
//!   cargo xtask test [ARGS]     build and run every test, privileged eBPF tests included,
//!                               then the benchmark in quick mode as a smoke test
//!   cargo xtask bench [--quick] [--only SECTION,...]
//!                               zt-agent against no hook and against nftables/iptables
//!   cargo xtask dist [--arch A]  .deb packages (amd64, arm64), arm64 unit tests under qemu
//!
//! One module per task (`daemon`, `test`, `bench`, `dist`); `cmd` runs cargo and the rest.

mod bench;
mod cmd;
mod daemon;
mod dist;
mod test;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Tasks cargo alone cannot do; run them through ./x",
    override_usage = "cargo xtask daemon [ARGS] | test [CARGO TEST ARGS] | bench [--quick] [--only SECTION,...] | dist [--arch amd64|arm64|all]"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the agent and run its daemon with the policies in policies/; ARGS go to
    /// `zt-agent daemon`
    #[command(disable_help_flag = true)]
    Daemon(PassOn),
    /// Build and run every test, privileged eBPF tests included, then (after a full
    /// green run) the benchmark in quick mode; ARGS go to `cargo test`
    #[command(disable_help_flag = true)]
    Test(PassOn),
    /// zt-agent against no hook and against nftables, iptables and OpenSnitch
    Bench {
        /// Small counts, results printed only (what CI runs)
        #[arg(long)]
        quick: bool,
        /// Only these sections (comma-separated), for work on one of them; the report is
        /// printed and bench/RESULTS.md left as it is
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::Section>,
    },
    /// Packages: a .deb per architecture (amd64, arm64 cross-built), with the unit,
    /// example policies, completions and man pages; the arm64 unit tests under qemu
    Dist {
        #[arg(long, value_enum, default_value = "all")]
        arch: dist::Arch,
    },
}

/// Arguments handed on untouched, `--` and all (`./x test -- --nocapture`).
#[derive(Args)]
struct PassOn {
    #[arg(allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
    /// What follows a leading `--`, which clap would otherwise drop.
    #[arg(last = true, hide = true)]
    after_dashes: Vec<String>,
}

impl PassOn {
    fn args(self) -> Vec<String> {
        let mut v = self.args;
        if !self.after_dashes.is_empty() {
            v.push("--".into());
            v.extend(self.after_dashes);
        }
        v
    }
}

fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help goes to stdout with status 0; a usage error is EX_USAGE, as before clap.
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(zt_agent_host::exit::USAGE.into());
        }
        Err(e) => e.exit(),
    };
    match cli.task {
        Task::Daemon(a) => daemon::run(&a.args()),
        Task::Test(a) => test::run(&a.args()),
        Task::Bench { quick, only } => bench::run(quick, &only),
        Task::Dist { arch } => dist::run(arch),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Task};

    fn passed_on(argv: &[&str]) -> Vec<String> {
        let cli = Cli::try_parse_from(std::iter::once("xtask").chain(argv.iter().copied()))
            .expect("parses");
        match cli.task {
            Task::Test(a) | Task::Daemon(a) => a.args(),
            Task::Bench { .. } | Task::Dist { .. } => panic!("not a pass-on task"),
        }
    }

    #[test]
    fn test_and_daemon_arguments_pass_on_untouched() {
        assert!(passed_on(&["test"]).is_empty());
        assert_eq!(passed_on(&["test", "-p", "zt-agent"]), ["-p", "zt-agent"]);
        assert_eq!(
            passed_on(&["test", "--", "--nocapture"]),
            ["--", "--nocapture"]
        );
        assert_eq!(
            passed_on(&["test", "--test", "egress", "--", "tcp"]),
            ["--test", "egress", "--", "tcp"]
        );
        assert_eq!(passed_on(&["test", "--help"]), ["--help"]);
        assert_eq!(passed_on(&["daemon", "--help"]), ["--help"]);
        assert_eq!(
            passed_on(&["daemon", "--log-format", "json"]),
            ["--log-format", "json"]
        );
    }

    #[test]
    fn bench_takes_quick_and_sections() {
        use super::bench::Section;
        let parsed = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.task) {
            Ok(Task::Bench { quick, only }) => Some((quick, only)),
            _ => None,
        };
        assert_eq!(parsed(&["xtask", "bench"]), Some((false, vec![])));
        assert_eq!(parsed(&["xtask", "bench", "--quick"]), Some((true, vec![])));
        assert_eq!(
            parsed(&["xtask", "bench", "--only", "dns,grants"]),
            Some((false, vec![Section::Dns, Section::Grants]))
        );
        assert_eq!(parsed(&["xtask", "bench", "--only", "nope"]), None);
        assert_eq!(parsed(&["xtask", "bench", "--bogus"]), None);
        assert!(Cli::try_parse_from(["xtask"]).is_err());
    }
}
