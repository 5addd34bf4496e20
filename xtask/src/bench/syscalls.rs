//! `cargo xtask bench syscalls`: CPU ns a getppid loop pays per call under each tracer.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result};
use clap::Args;

use super::harness::{Held, Ready, Tracer, have, median, scratch};

#[derive(Args)]
pub struct Options {
    /// Rounds (each runs every scenario once, in rotating order).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// getppid calls per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    calls: u64,
    /// getppid calls before each measurement, in ms (lets adaptive sampling settle).
    #[arg(long, default_value_t = 2500)]
    warmup_ms: u64,
    /// Only scenarios whose name contains one of these (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Another scalp-bpf binary (an earlier build) whose scalp-bpf scenarios run in the same
    /// rounds, marked "(compared)": before/after figures from one run.
    #[arg(long, value_name = "BIN")]
    compare: Option<std::path::PathBuf>,
}

/// One way of running the workload.
struct Scenario {
    name: String,
    /// Starts the tracer for the held workload's PID (None: no tracer).
    start: Box<dyn Fn(u32) -> Result<Option<Tracer>>>,
}

fn scalp(
    scalp_bin: &Path,
    name: &str,
    args: &'static [&'static str],
    target_self: bool,
) -> Scenario {
    let bin = scalp_bin.to_owned();
    let tracer_name: &'static str = "scalp-bpf";
    Scenario {
        name: name.to_owned(),
        start: Box::new(move |pid| {
            let out = scratch("scalp");
            let mut cmd = Command::new(&bin);
            cmd.arg("run").arg("--output").arg(&out).args(args);
            let mut bystander = None;
            if target_self {
                cmd.arg("--pid").arg(pid.to_string());
            } else {
                // Trace a sleeping bystander that is not the workload's ancestor (the children
                // of traced processes are traced), so the workload runs untraced.
                let sleeper = Command::new("sleep").arg("3600").spawn()?;
                cmd.arg("--pid").arg(sleeper.id().to_string());
                bystander = Some(sleeper);
            }
            let t = Tracer::start(tracer_name, &mut cmd, Ready::File(out.join("run.json")))?;
            Ok(Some(t.with_bystander(bystander).with_scratch(out)))
        }),
    }
}

/// The scalp-bpf scenarios of one binary.
fn scalp_scenarios(bin: &Path, suffix: &str) -> Vec<Scenario> {
    let name = |n: &str| format!("{n}{suffix}");
    vec![
        scalp(
            bin,
            &name("scalp-bpf traced, auto latency (default)"),
            &[],
            true,
        ),
        scalp(
            bin,
            &name("scalp-bpf traced, exact latency"),
            &["--syscall-latency", "exact"],
            true,
        ),
        scalp(
            bin,
            &name("scalp-bpf traced, sampled 1/8"),
            &["--syscall-latency", "sampled"],
            true,
        ),
        scalp(
            bin,
            &name("scalp-bpf traced, counts only"),
            &["--syscall-latency", "off"],
            true,
        ),
        scalp(bin, &name("scalp-bpf untraced process, auto"), &[], false),
        scalp(
            bin,
            &name("scalp-bpf untraced process, counts only"),
            &["--syscall-latency", "off"],
            false,
        ),
    ]
}

fn scenarios(scalp_bin: &Path, compare: Option<&Path>) -> Vec<Scenario> {
    let mut s = vec![
        Scenario {
            name: "baseline (nothing attached)".to_owned(),
            start: Box::new(|_| Ok(None)),
        },
        {
            let bin = scalp_bin.to_owned();
            Scenario {
                name: "empty tp_btf enter+exit programs".to_owned(),
                start: Box::new(move |_| {
                    Tracer::start(
                        "calibrate",
                        Command::new(&bin).arg("calibrate"),
                        Ready::Line("ready"),
                    )
                    .map(Some)
                }),
            }
        },
        {
            let bin = scalp_bin.to_owned();
            Scenario {
                name: "empty tp_btf exit program".to_owned(),
                start: Box::new(move |_| {
                    Tracer::start(
                        "calibrate",
                        Command::new(&bin).args(["calibrate", "--exit-only"]),
                        Ready::Line("ready"),
                    )
                    .map(Some)
                }),
            }
        },
    ];
    s.extend(scalp_scenarios(scalp_bin, ""));
    if let Some(other) = compare {
        s.extend(scalp_scenarios(other, " (compared)"));
    }
    if have("bpftrace") {
        s.push(Scenario {
            name: "bpftrace count per pid,id".to_owned(),
            start: Box::new(|pid| {
                let prog = format!("tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @[pid, args->id] = count(); }}");
                Tracer::start("bpftrace", Command::new("bpftrace").arg("-e").arg(prog), Ready::Line("Attaching")).map(Some)
            }),
        });
        s.push(Scenario {
            name: "bpftrace enter/exit latency hist".to_owned(),
            start: Box::new(|pid| {
                let prog = format!(
                    "tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @s[tid] = nsecs; }} \
                     tracepoint:raw_syscalls:sys_exit /@s[tid]/ {{ @h[args->id] = hist(nsecs - @s[tid]); delete(@s[tid]); }}"
                );
                Tracer::start("bpftrace", Command::new("bpftrace").arg("-e").arg(prog), Ready::Line("Attaching")).map(Some)
            }),
        });
    }
    if have("syscount-bpfcc") {
        s.push(Scenario {
            name: "BCC syscount -L -P".to_owned(),
            start: Box::new(|_| {
                Tracer::start(
                    "syscount",
                    Command::new("syscount-bpfcc").args(["-L", "-P"]),
                    Ready::Line("Tracing syscalls"),
                )
                .map(Some)
            }),
        });
    }
    s
}

fn measure(scenario: &Scenario, calls: u64, warmup_ms: u64) -> Result<f64> {
    let me = std::env::current_exe()?;
    let held = Held::start(Command::new(&me).args([
        "workload",
        "getppid",
        "--wait",
        "--count",
        &calls.to_string(),
        "--warmup-ms",
        &warmup_ms.to_string(),
    ]))?;
    let tracer = (scenario.start)(held.pid).with_context(|| scenario.name.clone())?;
    let line = held.release()?;
    if let Some(t) = tracer
        && let Err(e) = t.stop()
    {
        // The measurement is taken; a peer slow to exit (it was killed) does not void it.
        eprintln!("warning: {e:#}");
    }
    let field = "\"cpu_ns_per_call\": ";
    let at = line.find(field).context("workload output")? + field.len();
    let rest = &line[at..];
    let end = rest
        .find(|c: char| c != '.' && !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Ok(rest[..end].parse()?)
}

pub fn run(scalp_bin: &Path, opts: &Options) -> Result<()> {
    let scenarios: Vec<Scenario> = scenarios(scalp_bin, opts.compare.as_deref())
        .into_iter()
        .filter(|s| {
            s.name.starts_with("baseline")
                || opts
                    .only
                    .as_deref()
                    .is_none_or(|o| o.split(',').any(|o| s.name.contains(o)))
        })
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for round in 0..opts.rounds {
        for k in 0..scenarios.len() {
            let i = (k + round) % scenarios.len();
            let ns = measure(&scenarios[i], opts.calls, opts.warmup_ms)?;
            eprintln!(
                "round {} {:<42} {ns:>8.1} ns/call",
                round + 1,
                scenarios[i].name
            );
            samples[i].push(ns);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let base = medians[0];
    let empty = scenarios
        .iter()
        .position(|s| s.name.starts_with("empty tp_btf enter+exit"))
        .map(|i| medians[i] - base);
    println!(
        "\nsyscall overhead, getppid loop, {} calls x {} rounds (median CPU ns per call)",
        opts.calls, opts.rounds
    );
    println!("| scenario | ns/call | added ns | vs empty enter+exit |");
    println!("|---|---:|---:|---:|");
    for (s, m) in scenarios.iter().zip(&medians) {
        let added = m - base;
        let ratio = match empty {
            Some(e) if e > 0.0 && !s.name.starts_with("baseline") => format!("{:.2}x", added / e),
            _ => "".to_owned(),
        };
        println!("| {} | {m:.1} | {added:+.1} | {ratio} |", s.name);
    }
    Ok(())
}
