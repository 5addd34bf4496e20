//! `cargo xtask bench blockio`: fio 4 KiB random reads and writes, psync, O_DIRECT, untraced,
//! under scalp-bpf and under bpftrace block scripts, alternating.
//!
//! The default device is a loop device over a tmpfs file: its I/O is CPU-bound and free of the
//! shared disk's noise, so that per-I/O costs of a few hundred ns show in IOPS. Two figures:
//! IOPS relative to untraced (medians over rounds), and the tracer's program time per I/O from
//! the kernel's bpf_stats (a separate pass, minus the statistics' own cost per run, measured on
//! empty programs in the same pass).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{
    harness::{Held, Ready, Tracer, have, median, scratch},
    progstats::{self, StatsOn},
};

#[derive(Args)]
pub struct Options {
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Seconds per fio run.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Run fio on this file or device instead of a loop device over tmpfs.
    #[arg(long)]
    target: Option<PathBuf>,
}

const BPFTRACE_HIST: &str = "tracepoint:block:block_rq_issue { @s[args->dev, args->sector] = nsecs; } \
    tracepoint:block:block_rq_complete /@s[args->dev, args->sector]/ \
    { @us = hist((nsecs - @s[args->dev, args->sector]) / 1000); delete(@s[args->dev, args->sector]); }";

const BPFTRACE_PER_PID: &str = "tracepoint:block:block_rq_insert { @p[args->dev, args->sector] = pid; } \
    tracepoint:block:block_rq_issue /@p[args->dev, args->sector]/ { @i[args->dev, args->sector] = nsecs; } \
    tracepoint:block:block_rq_complete /@p[args->dev, args->sector]/ { $p = @p[args->dev, args->sector]; \
      @requests[$p] = count(); @bytes[$p] = sum(args->nr_sector * 512); \
      @lat[$p] = hist(nsecs - @i[args->dev, args->sector]); \
      delete(@p[args->dev, args->sector]); delete(@i[args->dev, args->sector]); }";

/// A loop device over a tmpfs file, detached on drop.
struct LoopDevice {
    dev: PathBuf,
    image: PathBuf,
}

impl LoopDevice {
    fn new() -> Result<LoopDevice> {
        let image = PathBuf::from(format!("/dev/shm/scalp-bench-{}.img", std::process::id()));
        std::fs::File::create(&image)?.set_len(256 << 20)?;
        let out = Command::new("losetup")
            .arg("--find")
            .arg("--show")
            .arg(&image)
            .output()?;
        if !out.status.success() {
            bail!("losetup: {}", String::from_utf8_lossy(&out.stderr));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(LoopDevice { dev, image })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

const SCENARIOS: &[&str] = &[
    "untraced",
    "scalp-bpf, fio traced",
    "scalp-bpf, fio untraced",
    "bpftrace issue->complete histogram",
    "bpftrace per-pid count/bytes/latency",
];

fn start_tracer(scalp: &Path, scenario: &str, pid: u32) -> Result<Option<Tracer>> {
    Ok(match scenario {
        "untraced" => None,
        s if s.starts_with("scalp-bpf") => {
            let out = scratch("blockio");
            let mut cmd = Command::new(scalp);
            cmd.arg("run").arg("--output").arg(&out);
            let mut bystander = None;
            if s.ends_with("fio traced") {
                cmd.args(["--pid", &pid.to_string()]);
            } else {
                let sleeper = Command::new("sleep").arg("3600").spawn()?;
                cmd.args(["--pid", &sleeper.id().to_string()]);
                bystander = Some(sleeper);
            }
            Some(
                Tracer::start(s, &mut cmd, Ready::File(out.join("run.json")))?
                    .with_bystander(bystander)
                    .with_scratch(out),
            )
        }
        s => {
            let script = if s.contains("histogram") {
                BPFTRACE_HIST
            } else {
                BPFTRACE_PER_PID
            };
            Some(Tracer::start(
                s,
                Command::new("bpftrace").args(["-e", script]),
                Ready::Line("Attaching"),
            )?)
        }
    })
}

/// One fio run under one scenario: (IOPS, I/Os, program ns and runs of the tracer's programs).
fn run_once(
    scalp: &Path,
    scenario: &str,
    rw: &str,
    target: &Path,
    seconds: u32,
) -> Result<(f64, f64, u64, u64)> {
    let fio = format!(
        "exec fio --name=bench --filename={} --size=200M --ioengine=psync --direct=1 --bs=4k --rw={rw} \
         --time_based --runtime={seconds} --output-format=json",
        target.display()
    );
    let held =
        Held::start(Command::new("sh").args(["-c", &format!("echo ready $$; read go; {fio}")]))?;
    let before_ids = progstats::ids()?;
    let tracer = start_tracer(scalp, scenario, held.pid)?;
    let ids: Vec<u64> = progstats::ids()?
        .into_iter()
        .filter(|id| !before_ids.contains(id))
        .collect();
    let s0 = progstats::snapshot()?;
    let json = held.release_all()?;
    let s1 = progstats::snapshot()?;
    if let Some(t) = tracer {
        t.stop()?;
    }
    let (ns, runs) = progstats::delta(&s0, &s1, &ids);
    let start = json.find('{').context("fio printed no JSON")?;
    let v: serde_json::Value = serde_json::from_str(&json[start..]).context("fio JSON")?;
    let side = if rw.contains("read") {
        &v["jobs"][0]["read"]
    } else {
        &v["jobs"][0]["write"]
    };
    Ok((
        side["iops"].as_f64().context("iops")?,
        side["total_ios"].as_f64().context("total_ios")?,
        ns,
        runs,
    ))
}

pub fn run(scalp: &Path, opts: &Options) -> Result<()> {
    if !have("fio") {
        bail!("fio is not installed");
    }
    let loop_dev = match &opts.target {
        Some(_) => None,
        None => Some(LoopDevice::new()?),
    };
    let target = opts
        .target
        .clone()
        .unwrap_or_else(|| loop_dev.as_ref().expect("made above").dev.clone());
    let scenarios: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| !s.starts_with("bpftrace") || have("bpftrace"))
        .collect();
    for rw in ["randread", "randwrite"] {
        let mut iops: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
        for round in 0..opts.rounds {
            for k in 0..scenarios.len() {
                let i = (k + round) % scenarios.len();
                let (v, ..) = run_once(scalp, scenarios[i], rw, &target, opts.seconds)?;
                eprintln!(
                    "{rw} round {} {:<40} {v:>8.0} IOPS",
                    round + 1,
                    scenarios[i]
                );
                iops[i].push(v);
            }
        }
        // Program time per I/O, with bpf_stats on (it slows everything: IOPS are not taken here).
        let _stats = StatsOn::new()?;
        let calibrate = Tracer::start(
            "calibrate",
            Command::new(scalp).arg("calibrate"),
            Ready::Line("ready"),
        )?;
        let cal_ids: Vec<u64> = progstats::ids()?;
        let mut per_io = Vec::new();
        for s in &scenarios {
            let c0 = progstats::snapshot()?;
            let (_, ios, ns, runs) = run_once(scalp, s, rw, &target, opts.seconds)?;
            let c1 = progstats::snapshot()?;
            // The statistics' own cost per run: what the empty calibration programs "take".
            let cal: Vec<u64> = cal_ids
                .iter()
                .copied()
                .filter(|id| c0.contains_key(id))
                .collect();
            let (cns, cruns) = progstats::delta(&c0, &c1, &cal);
            let overhead = if cruns > 0 {
                cns as f64 / cruns as f64
            } else {
                0.0
            };
            let net = (ns as f64 - overhead * runs as f64).max(0.0);
            per_io.push((net / ios.max(1.0), runs as f64 / ios.max(1.0)));
        }
        calibrate.stop()?;
        drop(_stats);
        let base = median(&mut iops[0].clone());
        println!(
            "\nfio {rw} 4 KiB psync O_DIRECT on {}, {} s x {} rounds",
            target.display(),
            opts.seconds,
            opts.rounds
        );
        println!(
            "| scenario | IOPS (median) | vs untraced | program ns per I/O | program runs per I/O |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (i, s) in scenarios.iter().enumerate() {
            let m = median(&mut iops[i]);
            let (ns, runs) = per_io[i];
            println!("| {s} | {m:.0} | {:.3} | {ns:.0} | {runs:.1} |", m / base);
        }
    }
    Ok(())
}
