//! `scalp-bpf top`: the flags of `run` that choose what to trace and how, without a command.

use std::path::PathBuf;

use clap::Args;

use super::run::{
    HttpArgs, OutputArgs, RunArgs, SqlArgs, SyscallArgs, TargetArgs, TimingArgs, TracerArgs,
};
use crate::kernel::btf::DEFAULT_PATH;

#[derive(Debug, Args)]
#[command(
    after_help = "Keys: 1-5 and d switch views (syscalls, files/disk, SQL, HTTP, RPC/cache, drops), s/S sort, Tab moves the focus between the tables, / filters processes, p pauses, q quits.\n\nExamples:\n  scalp-bpf top --pid nova-api --pid nova-conductor\n  scalp-bpf top --pid 4242 --interval 2s --output run1",
    mut_arg("output", |a| a.help("Also write the Parquet tables to DIR, as `run` does (must be new or empty) [default: nothing is written]")),
    mut_arg("duration", |a| a.help("Quit after this long (default: until q, Ctrl-C or SIGTERM)")),
)]
pub struct TopArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    // Boxed, as in `run`.
    #[command(flatten)]
    pub output: Box<OutputArgs>,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub tracers: TracerArgs,
    #[command(flatten)]
    pub syscalls: SyscallArgs,
    #[command(flatten)]
    pub sql: SqlArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    /// The kernel's BTF (type information); tracing needs it.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH, help_heading = "Kernel")]
    pub kernel_btf: PathBuf,
}

impl TopArgs {
    /// The same trace as a `run` without a command.
    pub fn into_run_args(self) -> RunArgs {
        RunArgs {
            targets: self.targets,
            output: self.output,
            timing: self.timing,
            tracers: self.tracers,
            syscalls: self.syscalls,
            sql: self.sql,
            http: self.http,
            kernel_btf: self.kernel_btf,
            command: Vec::new(),
        }
    }
}
