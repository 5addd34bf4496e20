//! `cargo xtask bench gate`: the CI gate's false-alarm and detection rates on the mixed workload
//! of tests/gate.py (three uWSGI services on MariaDB and PostgreSQL, a load whose per-service mix
//! varies by ±20 % between runs), with more runs than the test makes: unchanged pairs, unchanged
//! runs against three base runs, and runs with the three injected regressions against one and
//! three base runs.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{root, setup};

#[derive(Args)]
pub struct Options {
    /// Unchanged runs (n − 1 pairs, n − 3 three-base comparisons).
    #[arg(long, default_value_t = 43)]
    unchanged: u32,
    /// Runs with the regressions injected.
    #[arg(long, default_value_t = 40)]
    regressed: u32,
    /// Seconds traced per run.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Keep the runs in this directory.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

pub fn run(scalp: &Path, opts: &Options) -> Result<()> {
    let mut cmd = Command::new(setup::venv().join("bin/python"));
    cmd.arg(root().join("tests/gate.py"))
        .args(["--unchanged", &opts.unchanged.to_string()])
        .args(["--regressed", &opts.regressed.to_string()])
        .args(["--seconds", &opts.seconds.to_string()])
        .arg("--json")
        .env("SCALP_BPF", scalp);
    if let Some(keep) = &opts.keep {
        cmd.arg("--keep").arg(keep);
    }
    let out = cmd.output().context("run tests/gate.py")?;
    if !out.status.success() {
        bail!(
            "tests/gate.py failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("tests/gate.py's JSON")?;
    println!("| comparison | diff exited 1 | rate |");
    println!("|---|---:|---:|");
    let rates = doc["rates"].as_object().context("no rates")?;
    for (name, v) in rates {
        let (n, of) = (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0));
        let what = match name.as_str() {
            "pairs" => "unchanged, one base run (false alarms)".to_owned(),
            "three_bases" => "unchanged, three base runs (false alarms)".to_owned(),
            other => {
                let (kind, regression) = other.split_once(':').unwrap_or((other, ""));
                let bases = if kind.ends_with("one_base") {
                    "one base run"
                } else {
                    "three base runs"
                };
                format!("{regression}, {bases} (detected and named)")
            }
        };
        let pct = if of > 0 {
            100.0 * n as f64 / of as f64
        } else {
            0.0
        };
        println!("| {what} | {n}/{of} | {pct:.1} % |");
    }
    for kind in ["pairs", "three_bases"] {
        for r in doc["result"][kind].as_array().into_iter().flatten() {
            if r["exit"] == 1 {
                println!("false alarm ({kind}) {}: {}", r["head"], r["flagged"]);
            }
        }
    }
    println!(
        "{} runs in {:.0} s",
        opts.unchanged + opts.regressed,
        doc["seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}
