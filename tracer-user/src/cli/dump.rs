//! `scalp-bpf dump`: the flags.

use clap::{Args, ValueEnum};

use crate::targets::TargetSpec;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sudo scalp-bpf dump --pid nova-api\n  sudo scalp-bpf dump --pid 4242 --format json > nova-api.json"
)]
pub struct DumpArgs {
    /// A process to report on, by PID or name (as `run --pid`), with its descendants; repeat for
    /// more.
    #[arg(long, value_name = "NAME|PID", required = true)]
    pub pid: Vec<TargetSpec>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}
