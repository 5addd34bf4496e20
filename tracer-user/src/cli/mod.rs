//! The command line: one module per subcommand.

pub mod calibrate;
pub mod check;
pub mod diff;
pub mod dump;
pub mod recover;
pub mod report;
pub mod run;
pub mod ship;
pub mod summary;
pub mod top;
pub mod units;

use clap::{Parser, Subcommand};

/// Per-process syscall, I/O and SQL accounting with eBPF, written as Parquet.
#[derive(Debug, Parser)]
#[command(name = "scalp-bpf", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug, including the kernel programs' own messages).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace processes and write what they do to a directory of Parquet tables.
    Run(run::RunArgs),
    /// A live terminal view of the traced services: syscalls, I/O, SQL, HTTP, RPC and cache per
    /// service and process, read from the kernel maps every interval (nothing is written unless
    /// --output).
    Top(top::TopArgs),
    /// Summarize a run: per service (or process) and table, counts, totals and percentiles.
    Summary(summary::SummaryArgs),
    /// Compare two runs of the same job; exit 1 when the second regressed (the CI gate).
    Diff(diff::DiffArgs),
    /// Write one self-contained HTML page of a run: per service, timelines, histograms,
    /// tables and top talkers; with --base, `diff`'s verdicts side by side.
    Report(report::ReportArgs),
    /// A Guru Meditation report of a running service, taken from outside: every thread's
    /// Python and kernel stack, open files and sockets, memory, config (secrets masked) and
    /// Python packages.
    Dump(dump::DumpArgs),
    /// Seal what a killed run left in its write-ahead log (idempotent).
    Recover(recover::RecoverArgs),
    /// Upload a finished run's files to object storage (s3:// or file://), Hive layout.
    Ship(ship::ShipArgs),
    /// Record how many units of work (requests, test cases) a run did, for `diff --per unit`.
    Units(units::UnitsArgs),
    /// What each tracer gets on this kernel: ok, degraded (how) or unavailable (why); exit 0
    /// when process tracking and the syscall counts work.
    Check(check::CheckArgs),
    /// Attach empty programs to the syscall tracepoints (a benchmark reference).
    #[command(hide = true)]
    Calibrate(calibrate::CalibrateArgs),
}

/// Parses a human duration (`500ms`, `90s`, `5m`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (write durations like 500ms, 90s, 5m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(
            parse_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("5m"),
            Ok(std::time::Duration::from_secs(300))
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
