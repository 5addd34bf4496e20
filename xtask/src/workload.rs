//! Deterministic workloads: the demo, the benchmarks and the tests make exactly the syscalls and
//! I/O these functions make.

use std::{
    fs,
    io::{BufRead as _, Read as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct WorkloadArgs {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Subcommand)]
enum Kind {
    /// `count` getppid syscalls; prints CPU ns per call. With --wait, prints "ready PID" and
    /// waits for a line on stdin first (so a tracer can attach to the PID).
    Getppid {
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long)]
        wait: bool,
        /// Make getppid calls for this many ms before measuring (lets adaptive tracers settle).
        #[arg(long, default_value_t = 0)]
        warmup_ms: u64,
    },
    /// The demo: syscalls, failing opens, file writes with fsync, reads, a pipe, child processes.
    Demo {
        /// Scratch directory (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(args: WorkloadArgs) -> Result<()> {
    match args.kind {
        Kind::Getppid {
            count,
            wait,
            warmup_ms,
        } => getppid(count, wait, warmup_ms),
        Kind::Demo { dir } => demo(dir),
    }
}

/// CPU time this thread has used, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins this thread to the last CPU, away from the tracers' user-space work on CPU 0, so that
/// migrations do not add noise.
fn pin_to_last_cpu() {
    // SAFETY: plain libc calls on a zeroed, valid cpu_set_t.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        if n > 1 {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET((n - 1) as usize, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

fn getppid(count: u64, wait: bool, warmup_ms: u64) -> Result<()> {
    if wait {
        println!("ready {}", std::process::id());
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }
    pin_to_last_cpu();
    let warm_until = Instant::now() + std::time::Duration::from_millis(warmup_ms);
    while Instant::now() < warm_until {
        for _ in 0..1000 {
            // SAFETY: getppid has no arguments and no side effects.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    }
    let cpu0 = thread_cpu_ns();
    let wall0 = Instant::now();
    for _ in 0..count {
        // SAFETY: getppid has no arguments and no side effects.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let cpu = thread_cpu_ns() - cpu0;
    let wall = wall0.elapsed().as_nanos() as u64;
    println!(
        "{{\"calls\": {count}, \"cpu_ns_per_call\": {:.2}, \"wall_ns_per_call\": {:.2}}}",
        cpu as f64 / count.max(1) as f64,
        wall as f64 / count.max(1) as f64
    );
    Ok(())
}

fn demo(dir: Option<PathBuf>) -> Result<()> {
    let dir = dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("scalp-demo-{}", std::process::id())));
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // 1. Cheap syscalls and failures.
    for _ in 0..20_000 {
        // SAFETY: no arguments, no side effects.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    for i in 0..500 {
        let _ = fs::File::open(dir.join(format!("missing-{i}")));
    }
    // 2. File writes, fsync, reads.
    let path = dir.join("data.bin");
    let block = vec![0x5au8; 64 * 1024];
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        for _ in 0..64 {
            f.write_all(&block)?;
        }
        f.sync_all()?;
    }
    let mut buf = Vec::new();
    fs::File::open(&path)?.read_to_end(&mut buf)?;
    // 3. A pipe through a child process, then a few short-lived children.
    let mut child = std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        for _ in 0..256 {
            stdin.write_all(&block[..4096])?;
        }
    }
    child.wait()?;
    for _ in 0..5 {
        std::process::Command::new("true").status()?;
    }
    // 4. Some waiting.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    fs::remove_dir_all(&dir)?;
    Ok(())
}
