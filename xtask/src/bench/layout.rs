//! `cargo xtask bench layout`: the output layouts side by side on one workload — two scalp-bpf
//! runs at once on the same processes, one with the per-interval parts of before
//! (`--flush-every INTERVAL`), one with the default write-ahead log sealed every `--rotate`.
//! Measured per run: bytes written (`/proc/PID/io`: `wchar`, what it passed to write, and
//! `write_bytes - cancelled_write_bytes`, what reached the block layer), files, fsync-family calls
//! (counted by bpftrace on the two PIDs), peak RSS and CPU; then the time DuckDB takes for
//! `summary`-like queries on each output, and `scalp-bpf summary` itself.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::harness::{Held, median, remove, scratch};
use crate::{root, setup};

#[derive(Args)]
pub struct Options {
    /// The runs' --interval.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Minutes both runs trace the workload.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Workload processes (tests/workloads/steady.py with 16 distinct failing syscalls each).
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Rounds of each DuckDB query (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Keep the two outputs (their paths are printed).
    #[arg(long)]
    keep: bool,
}

/// One run and what it did.
struct Side {
    name: &'static str,
    out: PathBuf,
    child: Child,
    io0: Io,
    cpu0: f64,
    peak_rss_kib: u64,
}

#[derive(Clone, Copy, Default)]
struct Io {
    wchar: u64,
    write_bytes: u64,
    cancelled: u64,
}

fn io_of(pid: u32) -> Io {
    let text = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(0)
    };
    Io {
        wchar: get("wchar:"),
        write_bytes: get("write_bytes:"),
        cancelled: get("cancelled_write_bytes:"),
    }
}

/// CPU seconds (user + system, all threads) of a process.
fn cpu_of(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, r)| r.split(' ').collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .trim_end_matches(" kB")
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// (bytes, Parquet files, Parquet files of the syscalls table) of an output.
fn dir_stats(out: &Path) -> (u64, usize, usize) {
    let (mut bytes, mut parquet, mut syscalls) = (0, 0, 0);
    for t in fs::read_dir(out).into_iter().flatten().flatten() {
        let p = t.path();
        for f in fs::read_dir(&p).into_iter().flatten().flatten() {
            bytes += f.metadata().map_or(0, |m| m.len());
            if f.file_name().to_string_lossy().ends_with(".parquet") {
                parquet += 1;
                syscalls += usize::from(t.file_name() == "syscalls");
            }
        }
        if p.is_file() {
            bytes += t.metadata().map_or(0, |m| m.len());
        }
    }
    (bytes, parquet, syscalls)
}

fn start_run(
    scalp: &Path,
    name: &'static str,
    extra: &[&str],
    opts: &Options,
    pids: &[u32],
) -> Result<Side> {
    let out = scratch(&format!("layout-{name}"));
    let mut cmd = Command::new(scalp);
    cmd.arg("run").arg("--output").arg(&out);
    cmd.args(["--interval", &opts.interval]).args(extra);
    for p in pids {
        cmd.args(["--pid", &p.to_string()]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start scalp-bpf ({name})"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("run.json").exists() {
        if Instant::now() > deadline {
            bail!("scalp-bpf ({name}) did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Side {
        name,
        out,
        child,
        io0: Io::default(),
        cpu0: 0.0,
        peak_rss_kib: 0,
    })
}

/// bpftrace counting the fsync family per process, for the given PIDs.
fn count_syncs(pids: &[u32]) -> Result<Child> {
    let filter = pids
        .iter()
        .map(|p| format!("pid == {p}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let script = format!(
        "tracepoint:syscalls:sys_enter_fsync, tracepoint:syscalls:sys_enter_fdatasync, \
         tracepoint:syscalls:sys_enter_sync_file_range /{filter}/ {{ @[pid] = count(); }}"
    );
    let child = Command::new("bpftrace")
        .args(["-f", "json", "-e", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start bpftrace")?;
    // Attaching takes a moment; the runs only write once the workload goes.
    std::thread::sleep(Duration::from_secs(3));
    Ok(child)
}

fn sync_counts(child: Child) -> Result<Vec<(u32, u64)>> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut counts = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["type"] == "map"
            && let Some(m) = v["data"]["@"].as_object()
        {
            for (pid, n) in m {
                if let (Ok(pid), Some(n)) = (pid.parse(), n.as_u64()) {
                    counts.push((pid, n));
                }
            }
        }
    }
    Ok(counts)
}

const QUERIES: &[(&str, &str)] = &[
    (
        "top syscalls",
        "select process_name, syscall_name, sum(calls) c, sum(errors), sum(duration_ns_sum) \
         from read_parquet('{dir}/syscalls/*.parquet') group by all order by c desc limit 10",
    ),
    (
        "latency histogram",
        "select syscall_name, list_reduce(list(duration_histogram), \
         lambda a, b: list_transform(list_zip(a, b), lambda x: x[1] + x[2])) \
         from read_parquet('{dir}/syscalls/*.parquet') group by all",
    ),
    (
        "file I/O",
        "select file_kind, op, sum(calls), sum(bytes) \
         from read_parquet('{dir}/fileio/*.parquet') group by all",
    ),
    (
        "per second",
        "select date_trunc('second', interval_start) s, sum(calls) \
         from read_parquet('{dir}/syscalls/*.parquet') group by all order by s",
    ),
];

/// Median seconds of each query on each output (a new DuckDB connection per round).
fn duckdb_times(dirs: &[&Path], rounds: usize) -> Result<Vec<Vec<f64>>> {
    let python = setup::venv().join("bin/python");
    let script = r#"
import duckdb, json, statistics, sys, time
dirs, rounds, queries = json.loads(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
out = []
for d in dirs:
    row = []
    for q in queries:
        times = []
        for _ in range(rounds):
            con = duckdb.connect()
            con.execute("PRAGMA disable_progress_bar")
            t = time.perf_counter()
            con.sql(q.replace("{dir}", d)).fetchall()
            times.append(time.perf_counter() - t)
            con.close()
        row.append(statistics.median(times))
    out.append(row)
print(json.dumps(out))
"#;
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let queries: Vec<&str> = QUERIES.iter().map(|(_, q)| *q).collect();
    let out = Command::new(python)
        .args(["-c", script])
        .arg(serde_json::to_string(&dirs)?)
        .arg(rounds.to_string())
        .arg(serde_json::to_string(&queries)?)
        .output()
        .context("run DuckDB (the tests' virtualenv)")?;
    if !out.status.success() {
        bail!("DuckDB failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn summary_time(scalp: &Path, dir: &Path, rounds: usize) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let st = Command::new(scalp)
            .arg("summary")
            .arg(dir)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("scalp-bpf summary {} failed", dir.display());
        }
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(&mut times))
}

pub fn run(scalp: &Path, opts: &Options) -> Result<()> {
    let steady = root().join("tests/workloads/steady.py");
    let mut workers = Vec::new();
    for i in 0..opts.workers {
        workers.push(Held::start(
            Command::new("python3")
                .arg(&steady)
                .args(["--hold", "--distinct", "16", "--sleep"])
                .arg(format!("{}", 0.002 + 0.001 * f64::from(i))),
        )?);
    }
    let pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    let interval = opts.interval.clone();
    let mut sides = vec![
        start_run(
            scalp,
            "per-interval parts",
            &["--flush-every", &interval],
            opts,
            &pids,
        )?,
        start_run(scalp, "log + 10-min files", &[], opts, &pids)?,
    ];
    let started = Instant::now();
    let syncs = count_syncs(&sides.iter().map(|s| s.child.id()).collect::<Vec<_>>())?;
    let sync_start = Instant::now();
    let mut releases = Vec::new();
    for w in workers {
        releases.push(std::thread::spawn(move || w.release()));
    }
    std::thread::sleep(Duration::from_secs(2));
    for s in &mut sides {
        s.io0 = io_of(s.child.id());
        s.cpu0 = cpu_of(s.child.id());
    }
    let t0 = Instant::now();
    let window = Duration::from_secs_f64(opts.minutes * 60.0);
    while t0.elapsed() < window {
        for s in &mut sides {
            s.peak_rss_kib = s.peak_rss_kib.max(rss_kib(s.child.id()));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let mut rows = Vec::new();
    for s in &mut sides {
        let io = io_of(s.child.id());
        let cpu = cpu_of(s.child.id()) - s.cpu0;
        // Files while running (the last, partial period is sealed when the run stops).
        let files = dir_stats(&s.out);
        rows.push((io, cpu, files));
    }
    let sync_secs = sync_start.elapsed().as_secs_f64();
    let run_hours = started.elapsed().as_secs_f64() / 3600.0;
    let sync_counts = sync_counts(syncs)?;
    for s in &mut sides {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
    }
    for s in &mut sides {
        let st = s.child.wait()?;
        if !st.success() {
            bail!("scalp-bpf ({}) failed: {st}", s.name);
        }
    }
    for p in &pids {
        // SAFETY: signalling the workers we started.
        unsafe { libc::kill(*p as i32, libc::SIGUSR1) };
    }
    for r in releases {
        let _ = r.join();
    }

    println!(
        "\n{} workers, --interval {}, {minutes:.1} min traced by both runs at once\n",
        opts.workers, opts.interval
    );
    println!("| | {} | {} | ratio |", sides[0].name, sides[1].name);
    println!("|---|---:|---:|---:|");
    let per_min = |v: u64| v as f64 / minutes;
    let line = |what: &str, a: f64, b: f64, unit: &str| {
        println!(
            "| {what} | {a:.1}{unit} | {b:.1}{unit} | {:.1}x |",
            if b > 0.0 { a / b } else { f64::INFINITY }
        );
    };
    let kib = |v: f64| v / 1024.0;
    let (a, b) = (&rows[0], &rows[1]);
    line(
        "written (wchar) per minute",
        kib(per_min(a.0.wchar - sides[0].io0.wchar)),
        kib(per_min(b.0.wchar - sides[1].io0.wchar)),
        " KiB",
    );
    let disk = |io: &Io, io0: &Io| {
        (io.write_bytes - io0.write_bytes).saturating_sub(io.cancelled - io0.cancelled)
    };
    line(
        "to the block layer per minute",
        kib(per_min(disk(&a.0, &sides[0].io0))),
        kib(per_min(disk(&b.0, &sides[1].io0))),
        " KiB",
    );
    let secs = minutes * 60.0;
    let syncs_of = |pid: u32| {
        sync_counts
            .iter()
            .find(|(p, _)| *p == pid)
            .map_or(0, |(_, n)| *n) as f64
    };
    line(
        "fsync-family calls per second",
        syncs_of(sides[0].child.id()) / sync_secs,
        syncs_of(sides[1].child.id()) / sync_secs,
        "",
    );
    line(
        "files per hour, all tables",
        a.2.1 as f64 / run_hours,
        b.2.1 as f64 / run_hours,
        "",
    );
    line(
        "files per hour, syscalls table",
        a.2.2 as f64 / run_hours,
        b.2.2 as f64 / run_hours,
        "",
    );
    let (bytes_a, _, _) = dir_stats(&sides[0].out);
    let (bytes_b, _, _) = dir_stats(&sides[1].out);
    line(
        "output size",
        kib(bytes_a as f64),
        kib(bytes_b as f64),
        " KiB",
    );
    line(
        "peak RSS",
        sides[0].peak_rss_kib as f64 / 1024.0,
        sides[1].peak_rss_kib as f64 / 1024.0,
        " MiB",
    );
    line(
        "CPU (% of one CPU)",
        a.1 / secs * 100.0,
        b.1 / secs * 100.0,
        "",
    );

    let dirs: Vec<&Path> = sides.iter().map(|s| s.out.as_path()).collect();
    let times = duckdb_times(&dirs, opts.rounds)?;
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        line(
            &format!("DuckDB: {name}"),
            times[0][i] * 1000.0,
            times[1][i] * 1000.0,
            " ms",
        );
    }
    line(
        "scalp-bpf summary",
        summary_time(scalp, dirs[0], opts.rounds)? * 1000.0,
        summary_time(scalp, dirs[1], opts.rounds)? * 1000.0,
        " ms",
    );
    if opts.keep {
        for s in &sides {
            println!("kept {}", s.out.display());
        }
    } else {
        for s in &sides {
            remove(&s.out);
        }
    }
    Ok(())
}
