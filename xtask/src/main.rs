//! Project tasks: `cargo xtask demo | test | bench | setup | workload`.
//!
//! Every task installs what it needs first, idempotently, so that each of the README's two
//! commands works on a fresh machine.

mod bench;
mod demo;
mod pythons;
mod setup;
mod test;
mod vm;
mod workload;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "scalp-bpf's build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the demo, the tests or the benchmarks need (idempotent).
    Setup {
        #[arg(value_enum, default_value = "test")]
        profile: setup::Profile,
    },
    /// Build scalp-bpf and trace the bundled demo workload.
    Demo,
    /// Run every test: unit tests, then the root acceptance tests against real programs.
    Test {
        /// Only run acceptance tests whose name matches (pytest -k).
        #[arg(short = 'k', long, conflicts_with = "kernels")]
        filter: Option<String>,
        /// Skip the unit tests.
        #[arg(long, conflicts_with = "kernels")]
        acceptance_only: bool,
        /// The kernel matrix (`--kernel 5.10|6.1|6.12|all`): QEMU guests instead of the host.
        #[command(flatten)]
        vm: vm::VmArgs,
    },
    /// Formatting and clippy on every crate, the kernel programs included.
    Lint,
    /// Measure overheads against an untraced baseline and peer tools.
    Bench(bench::BenchArgs),
    /// Workloads the demo, tests and benchmarks drive (run by them, not by hand).
    #[command(hide = true)]
    Workload(workload::WorkloadArgs),
    /// The kernel matrix's workloads, run inside the guest.
    #[command(hide = true)]
    VmWorkload(vm::workload::WorkloadArgs),
}

/// A failed task ends with its error chain on one line and exit 1 (no backtrace, even with
/// RUST_BACKTRACE set: the chain says what failed; the output above it says why).
fn main() -> std::process::ExitCode {
    match task(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn task(task: Task) -> Result<()> {
    match task {
        Task::Setup { profile } => setup::run(profile),
        Task::Demo => demo::run(),
        Task::Test { vm, .. } if !vm.kernels.is_empty() => vm::run(&vm),
        Task::Test {
            filter,
            acceptance_only,
            ..
        } => test::run(filter.as_deref(), acceptance_only),
        Task::Lint => test::lint(),
        Task::Bench(args) => bench::run(args),
        Task::Workload(args) => workload::run(args),
        Task::VmWorkload(args) => vm::workload::run(args),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn test_filters_apply_to_the_host_suite_only() {
        match parse(&["test", "-k", "drops"]).map(|c| c.task) {
            Ok(Task::Test {
                filter,
                acceptance_only,
                vm,
            }) => {
                assert_eq!(filter.as_deref(), Some("drops"));
                assert!(!acceptance_only && vm.kernels.is_empty());
            }
            _ => panic!("test -k drops should parse"),
        }
        use clap::error::ErrorKind;
        for (args, kind) in [
            (
                &["test", "-k", "drops", "--kernel", "6.1"][..],
                ErrorKind::ArgumentConflict,
            ),
            (
                &["test", "--acceptance-only", "--kernel", "all"],
                ErrorKind::ArgumentConflict,
            ),
            // Guest options need a kernel.
            (
                &["test", "--check", "syscalls"],
                ErrorKind::MissingRequiredArgument,
            ),
        ] {
            match parse(args) {
                Err(e) => assert_eq!(e.kind(), kind, "{args:?}: {e}"),
                Ok(_) => panic!("{args:?} should be refused"),
            }
        }
    }

    #[test]
    fn setup_defaults_to_the_test_profile() {
        match parse(&["setup"]).map(|c| c.task) {
            Ok(Task::Setup { profile }) => assert_eq!(profile, setup::Profile::Test),
            _ => panic!("setup should parse"),
        }
        assert!(parse(&["setup", "everything"]).is_err());
    }

    #[test]
    fn the_root_is_the_workspace() {
        assert!(root().join("Cargo.toml").is_file() && root().join("xtask").is_dir());
    }
}
