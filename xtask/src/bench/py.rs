//! The benchmarks written in Python (`tests/bench/bench_*.py`): they drive the tests' real servers
//! (tests/servers.py: MariaDB, uWSGI, RabbitMQ, memcached) with real load generators (wrk,
//! memaslap, py-amqp), so they run with the tests' virtualenv. Each script starts what it needs on
//! 127.0.0.1, ends all of it on every way out and checks with bpftool that none of scalp-bpf's
//! programs is left loaded.

use std::{path::Path, process::Command};

use anyhow::Result;
use clap::Args;

use crate::{root, setup};

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct Options {
    /// The script's own options (`--help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Runs tests/bench/bench_`name`.py with `--scalp BIN` and the options given.
pub fn run(scalp: &Path, name: &str, opts: &Options) -> Result<()> {
    setup::sh(
        Command::new(setup::venv().join("bin/python"))
            .arg(root().join(format!("tests/bench/bench_{name}.py")))
            .arg("--scalp")
            .arg(scalp)
            .args(&opts.args)
            // Servers of their own, apart from those of a test session running meanwhile.
            .env("SCALP_TEST_SERVERS", "/tmp/scalp-bench-servers")
            .env("PYTHONUNBUFFERED", "1"),
    )
}
