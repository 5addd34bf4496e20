//! `cargo xtask bench sql`: pgbench against the tests' PostgreSQL server, untraced and traced,
//! alternating. Two figures: the statements per second scalp-bpf follows with no event lost
//! (pipelined SELECTs, 16 per round trip, two clients), and the latency one statement gains as
//! the client sees it (one SELECT per round trip, one client).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{
    harness::{Held, Ready, Tracer, median, remove, scratch},
    progstats::{self, StatsOn},
};
use crate::root;

#[derive(Args)]
pub struct Options {
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 4)]
    seconds: u32,
}

const PIPELINE: usize = 16;
/// scalp-bpf's default tracers, and the syscall tracer alone (to tell the SQL tracer's share).
const ALL: &str = "syscalls,fileio,blockio,sql";
const SYSCALLS_ONLY: &str = "syscalls";

struct Outcome {
    tps: f64,
    latency_ms: f64,
    transactions: u64,
}

fn pgbench() -> Result<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    bins.sort();
    bins.pop().context("pgbench not found (postgresql-contrib)")
}

/// Program time of one traced run: (run time ns, runs) of scalp-bpf's programs.
type ProgramTime = (u64, u64);
/// What scalp-bpf saw of a traced run: (statements counted, events lost).
type Counted = (u64, u64);

fn run(
    scalp: &Path,
    traced: Option<&str>,
    script: &Path,
    clients: u32,
    seconds: u32,
) -> Result<(Outcome, Option<Counted>, ProgramTime)> {
    let cmd = format!(
        "exec {} -h 127.0.0.1 -p 5432 -U scalp -n -M extended -f {} -c {clients} -j {clients} -T {seconds} scalp",
        pgbench()?.display(),
        script.display()
    );
    let held = Held::start(
        Command::new("sh")
            .args(["-c", &format!("echo ready $$; read go; {cmd}")])
            .env("PGPASSWORD", "scalp-test"),
    )?;
    let out = scratch("sql");
    let before_ids = progstats::ids()?;
    let tracer = if let Some(tracers) = traced {
        let mut c = Command::new(scalp);
        c.arg("run")
            .args(["--tracers", tracers])
            .arg("--output")
            .arg(&out)
            .args(["--pid", &held.pid.to_string()]);
        Some(Tracer::start(
            "scalp-bpf",
            &mut c,
            Ready::File(out.join("run.json")),
        )?)
    } else {
        None
    };
    let ids: Vec<u64> = progstats::ids()?
        .into_iter()
        .filter(|id| !before_ids.contains(id))
        .collect();
    let s0 = progstats::snapshot()?;
    let text = held.release_all()?;
    let s1 = progstats::snapshot()?;
    let program = progstats::delta(&s0, &s1, &ids);
    let counted = match tracer {
        Some(t) => {
            t.stop()?;
            Some(count_statements(scalp, &out)?)
        }
        None => None,
    };
    remove(&out);
    let field = |name: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("pgbench said no {name}"))?;
        let v = line
            .split(['=', ':'])
            .nth(1)
            .context("value")?
            .split_whitespace()
            .next()
            .context("value")?;
        Ok(v.parse()?)
    };
    Ok((
        Outcome {
            tps: field("tps")?,
            latency_ms: field("latency average")?,
            transactions: field("number of transactions actually processed")? as u64,
        },
        counted,
        program,
    ))
}

/// (statements scalp-bpf counted for `SELECT ?`, events it lost) from its summary.
fn count_statements(scalp: &Path, out: &Path) -> Result<Counted> {
    let o = Command::new(scalp)
        .args(["summary", "--format", "json", "--top", "100"])
        .arg(out)
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("summary JSON")?;
    let mut calls = 0;
    for t in v["tables"].as_array().into_iter().flatten() {
        if t["table"] != "sql_statements" {
            continue;
        }
        for g in t["groups"].as_array().into_iter().flatten() {
            for r in g["rows"].as_array().into_iter().flatten() {
                if r["db_query_text"] == "SELECT ?" {
                    calls += r["calls"].as_u64().unwrap_or(0);
                }
            }
        }
    }
    let lost = v["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["tracer"] == "sql")
        .map(|d| d["count"].as_u64().unwrap_or(0))
        .sum();
    Ok((calls, lost))
}

pub fn run_bench(scalp: &Path, opts: &Options) -> Result<()> {
    crate::setup::sh(
        Command::new("python3")
            .arg(root().join("tests/servers.py"))
            .arg("start"),
    )?;
    let dir = scratch("sql-scripts");
    std::fs::create_dir_all(&dir)?;
    let one = dir.join("one.sql");
    let pipe = dir.join("pipeline.sql");
    std::fs::write(&one, "SELECT 1;\n")?;
    std::fs::write(
        &pipe,
        format!(
            "\\startpipeline\n{}\\endpipeline\n",
            "SELECT 1;\n".repeat(PIPELINE)
        ),
    )?;

    // Throughput, and whether every statement was seen.
    let (mut base_sps, mut traced_sps) = (Vec::new(), Vec::new());
    let mut checks = Vec::new();
    for round in 0..opts.rounds {
        for traced in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let (o, counted, _) = run(scalp, traced.then_some(ALL), &pipe, 2, opts.seconds)?;
            let sps = o.tps * PIPELINE as f64;
            eprintln!(
                "pipelined round {} traced={traced}: {sps:.0} statements/s",
                round + 1
            );
            if let Some((calls, lost)) = counted {
                traced_sps.push(sps);
                checks.push((o.transactions * PIPELINE as u64, calls, lost));
            } else {
                base_sps.push(sps);
            }
        }
    }
    // Latency, one statement per round trip.
    let (mut base_lat, mut traced_lat) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        for traced in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let (o, ..) = run(scalp, traced.then_some(ALL), &one, 1, opts.seconds)?;
            eprintln!(
                "single round {} traced={traced}: {:.1} µs",
                round + 1,
                o.latency_ms * 1000.0
            );
            if traced {
                traced_lat.push(o.latency_ms * 1000.0)
            } else {
                base_lat.push(o.latency_ms * 1000.0)
            }
        }
    }
    // What the programs add to each statement, from the kernel's own statistics (bpf_stats on
    // slows everything, so the figures above are taken without it): scalp-bpf's programs run on
    // the client's send and receive syscalls, in the client's time.
    let per_statement = |tracers: &str| -> Result<(f64, f64)> {
        let _stats = StatsOn::new()?;
        let calibrate = Tracer::start(
            "calibrate",
            Command::new(scalp).arg("calibrate"),
            Ready::Line("ready"),
        )?;
        let cal_ids = progstats::ids()?;
        let c0 = progstats::snapshot()?;
        let (o, _, (ns, runs)) = run(scalp, Some(tracers), &one, 1, opts.seconds)?;
        let c1 = progstats::snapshot()?;
        calibrate.stop()?;
        let cal: Vec<u64> = cal_ids
            .into_iter()
            .filter(|id| c0.contains_key(id))
            .collect();
        let (cns, cruns) = progstats::delta(&c0, &c1, &cal);
        let overhead = if cruns > 0 {
            cns as f64 / cruns as f64
        } else {
            0.0
        };
        let statements = o.transactions.max(1) as f64;
        Ok((
            (ns as f64 - overhead * runs as f64).max(0.0) / statements,
            runs as f64 / statements,
        ))
    };
    let (mut all, mut syscalls) = (Vec::new(), Vec::new());
    for _ in 0..opts.rounds.div_ceil(2) {
        all.push(per_statement(ALL)?.0);
        syscalls.push(per_statement(SYSCALLS_ONLY)?.0);
    }
    if checks
        .iter()
        .any(|(sent, seen, lost)| sent != seen || *lost > 0)
    {
        eprintln!("statements sent vs counted vs lost per traced run: {checks:?}");
    }
    println!(
        "\nSQL tracer, pgbench (PostgreSQL over TCP), {} s x {} rounds (medians)",
        opts.seconds, opts.rounds
    );
    println!("| measure | untraced | traced by scalp-bpf | change |");
    println!("|---|---:|---:|---:|");
    let (b, t) = (median(&mut base_sps), median(&mut traced_sps));
    println!(
        "| statements/s, 2 clients, pipelines of {PIPELINE} | {b:.0} | {t:.0} | {:+.1} % |",
        (t / b - 1.0) * 100.0
    );
    let (b, t) = (median(&mut base_lat), median(&mut traced_lat));
    println!(
        "| latency per statement, 1 client (µs) | {b:.1} | {t:.1} | {:+.1} µs |",
        t - b
    );
    let (all, syscalls) = (median(&mut all), median(&mut syscalls));
    println!(
        "| program time per statement, 1 client, all tracers (bpf_stats) | | {all:.0} ns | {:+.2} µs |",
        all / 1000.0
    );
    println!(
        "| … of which the SQL capture (all tracers − syscalls only) | | {:.0} ns | {:+.2} µs |",
        all - syscalls,
        (all - syscalls) / 1000.0
    );
    let exact = checks
        .iter()
        .all(|(sent, seen, lost)| sent == seen && *lost == 0);
    println!(
        "\nevery traced run: statements counted == statements pgbench completed, 0 events lost: {}",
        if exact { "yes" } else { "NO" }
    );
    if !exact {
        bail!("the SQL tracer missed statements");
    }
    Ok(())
}
