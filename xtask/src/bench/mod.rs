//! `cargo xtask bench …`: overhead measurements. The machine is noisy, so every figure is a
//! median over rounds in which the scenarios alternate, and each is read as the traced thread's
//! own CPU time per operation, compared within one run.

mod blockio;
mod churn;
mod gate;
mod harness;
mod layout;
mod progstats;
mod py;
mod sql;
mod syscalls;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::setup::{self, Profile};

#[derive(Args)]
pub struct BenchArgs {
    /// Measure this scalp-bpf binary instead of building the checkout's.
    #[arg(long, value_name = "BIN", global = true)]
    scalp: Option<std::path::PathBuf>,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Added CPU ns per syscall: scalp-bpf (traced and untraced processes) vs bpftrace and BCC.
    Syscalls(syscalls::Options),
    /// fio IOPS and CPU per I/O: scalp-bpf vs untraced vs bpftrace block scripts.
    Blockio(blockio::Options),
    /// pgbench statements/s with nothing lost, and latency added per statement.
    Sql(sql::Options),
    /// Output layouts side by side: per-interval parts vs the write-ahead log sealed every 10
    /// min (bytes written, files, fsyncs, RSS, CPU, DuckDB query time).
    Layout(layout::Options),
    /// Process churn: scalp-bpf's RSS and map entries while a parent forks short-lived
    /// children for minutes (they must stay flat; ended processes must be reaped).
    Churn(churn::Options),
    /// The CI gate's false-alarm and detection rates on a mixed uWSGI workload (tests/gate.py).
    Gate(gate::Options),
    /// A service mix (uWSGI + MariaDB under wrk, fsync and buffered writers, untraced twins):
    /// per-program bpf_stats, scalp-bpf's CPU and RSS, the workload's rates (issue 15).
    Mix(py::Options),
    /// wrk against wsgi_app under uWSGI: requests/s, added latency and CPU per request, exact
    /// counts with nothing lost, program time per request.
    Http(py::Options),
    /// AMQP messages/s through RabbitMQ (py-amqp publisher and consumer): added CPU and program
    /// time per message, exact counts with nothing lost.
    Rpc(py::Options),
    /// memcached ops/s (memaslap): added CPU and program time per op, exact counts.
    Cache(py::Options),
    /// A PyMySQL client's SELECT loop untraced, traced without and with Python call sites:
    /// added time per statement, exact call sites, program time per statement.
    Sqlsites(py::Options),
}

pub fn run(args: BenchArgs) -> Result<()> {
    setup::run(Profile::Bench)?;
    // Per-program run-time statistics add two clock reads to every program run.
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    if stats.trim() != "0" {
        anyhow::bail!(
            "kernel.bpf_stats_enabled is on: it distorts every figure; turn it off first"
        );
    }
    // --scalp BIN or SCALP_BPF: a binary built already (as for the tests), e.g. in another
    // target directory.
    let scalp = match args
        .scalp
        .or_else(|| std::env::var_os("SCALP_BPF").map(Into::into))
    {
        Some(bin) => bin,
        None => setup::build_release()?,
    };
    match args.what {
        What::Syscalls(opts) => syscalls::run(&scalp, &opts),
        What::Blockio(opts) => blockio::run(&scalp, &opts),
        What::Sql(opts) => sql::run_bench(&scalp, &opts),
        What::Churn(opts) => churn::run(&scalp, &opts),
        What::Layout(opts) => layout::run(&scalp, &opts),
        What::Gate(opts) => gate::run(&scalp, &opts),
        What::Mix(opts) => py::run(&scalp, "mix", &opts),
        What::Http(opts) => py::run(&scalp, "http", &opts),
        What::Rpc(opts) => py::run(&scalp, "rpc", &opts),
        What::Cache(opts) => py::run(&scalp, "cache", &opts),
        What::Sqlsites(opts) => py::run(&scalp, "sqlsites", &opts),
    }
}
