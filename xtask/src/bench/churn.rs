//! `cargo xtask bench churn`: scalp-bpf follows a parent that forks short-lived children
//! constantly (tests/workloads/churn.py: a few hundred per second, each making syscalls and file
//! I/O, some exec'ing, some threaded) for N minutes. Every ~10 s it samples scalp-bpf's RSS and
//! CPU time and the entries of each of its maps, read through the bpf syscall from the map ids
//! scalp-bpf itself holds open (its /proc/PID/fdinfo), so other scalp-bpf instances never count.
//! The verdict: RSS flat from the first minute to the last, per-process maps bounded during the
//! churn and back to their baseline once it stops (ended processes reaped).

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;

use super::harness::{median, remove, scratch};
use crate::root;

#[derive(Args)]
pub struct Options {
    /// Minutes of churn.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Children forked per second.
    #[arg(long, default_value_t = 300)]
    rate: u32,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    every: u64,
}

/// Maps whose entries belong to one process each: they must come back to their baseline.
const PER_PROCESS: &[&str] = &[
    "TRACED",
    "SYSCALL_SLOTS",
    "SYSCALL_STATS",
    "FILEIO_STATS",
    "FILE_STATS",
    "BLOCK_STATS",
];
/// Entries the still-traced parent may hold after the churn (its own syscalls, files).
const PARENT_ENTRIES: u64 = 32;
/// Every map sampled, in the table's order. TRACED and SYSCALL_SLOTS are arrays: their counts
/// are the tgids marked and the slots taken.
const MAPS: &[&str] = &[
    "TRACED",
    "SYSCALL_SLOTS",
    "SYSCALL_STATS",
    "FILEIO_STATS",
    "FILE_STATS",
    "BLOCK_STATS",
    "BLOCK_INFLIGHT",
    "WRITEBACK_OWNER",
    "FLUSHER_OWNER",
    "SQL_SOCKS",
];

struct Sample {
    /// Seconds since the churn started (negative: before).
    t: f64,
    forked: u64,
    rss_kib: u64,
    /// scalp-bpf's CPU time since the previous sample, % of one CPU.
    cpu_pct: f64,
    entries: Vec<Option<u64>>,
    after: bool,
}

pub fn run(scalp: &Path, opts: &Options) -> Result<()> {
    let seconds = opts.minutes * 60.0;
    let out = scratch("churn");
    let files = scratch("churn-files");
    let mut work = Command::new("python3")
        .arg(root().join("tests/workloads/churn.py"))
        .args(["--hold", "--hold-after", "--rate", &opts.rate.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .arg("--dir")
        .arg(&files)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start tests/workloads/churn.py")?;
    let mut stdin = work.stdin.take().expect("piped");
    let mut lines = BufReader::new(work.stdout.take().expect("piped")).lines();
    let ready = lines.next().context("churn.py said nothing")??;
    let pid: u32 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow!("churn.py said {ready:?}"))?;

    let stderr = fs::File::create(scratch("churn-stderr"))?;
    let mut tracer = Command::new(scalp)
        .arg("run")
        .arg("--output")
        .arg(&out)
        .args(["--pid", &pid.to_string(), "--files"])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("start scalp-bpf")?;
    let result = measure(&mut tracer, &out, &mut stdin, lines, opts, seconds);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let status = tracer.wait()?;
    let _ = work.kill();
    let _ = work.wait();
    let drops = fs::read_to_string(out.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["drops"].clone());
    remove(&out);
    remove(&files);
    let samples = result?;
    if !status.success() {
        bail!("scalp-bpf failed: {status}");
    }
    report(&samples, opts, seconds, drops)
}

fn measure(
    tracer: &mut Child,
    out: &Path,
    stdin: &mut std::process::ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    opts: &Options,
    seconds: f64,
) -> Result<Vec<Sample>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("run.json").exists() {
        if Instant::now() > deadline || tracer.try_wait()?.is_some() {
            bail!("scalp-bpf did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let scalp_pid = tracer.id();
    let maps = ScalpMaps::of(scalp_pid)?;
    let mut cpu = Cpu::of(scalp_pid)?;
    // Baseline: only the parent is traced.
    std::thread::sleep(Duration::from_secs(2));
    let mut samples = vec![sample(-2.0, 0, scalp_pid, &mut cpu, &maps, false)?];
    print_header();
    print_row(&samples[0]);

    let forked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (forked, done) = (forked.clone(), done.clone());
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    forked.store(v["forked"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    if v["done"] == true {
                        done.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    stdin.write_all(b"go\n")?;
    stdin.flush()?;
    let start = Instant::now();
    let every = Duration::from_secs(opts.every.max(1));
    let mut next = start + every;
    while !done.load(Ordering::Relaxed) {
        if tracer.try_wait()?.is_some() {
            bail!("scalp-bpf exited during the churn");
        }
        if start.elapsed().as_secs_f64() > seconds + 120.0 {
            bail!("the churn did not end");
        }
        if Instant::now() >= next {
            let t = start.elapsed().as_secs_f64();
            let s = sample(
                t,
                forked.load(Ordering::Relaxed),
                scalp_pid,
                &mut cpu,
                &maps,
                false,
            )?;
            print_row(&s);
            samples.push(s);
            next += every;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The children have all ended; the parent idles, still traced. Two intervals (1 s each)
    // are enough to write and reap the last of them.
    std::thread::sleep(Duration::from_secs(3));
    let t = start.elapsed().as_secs_f64();
    let s = sample(
        t,
        forked.load(Ordering::Relaxed),
        scalp_pid,
        &mut cpu,
        &maps,
        true,
    )?;
    print_row(&s);
    samples.push(s);
    stdin.write_all(b"\n")?;
    let _ = reader.join();
    Ok(samples)
}

fn sample(
    t: f64,
    forked: u64,
    pid: u32,
    cpu: &mut Cpu,
    maps: &ScalpMaps,
    after: bool,
) -> Result<Sample> {
    Ok(Sample {
        t,
        forked,
        rss_kib: rss_kib(pid)?,
        cpu_pct: cpu.percent_since_last(pid)?,
        entries: MAPS.iter().map(|name| maps.entries(name)).collect(),
        after,
    })
}

fn print_header() {
    let names: Vec<String> = MAPS.iter().map(|m| format!("{m:>15}")).collect();
    println!(
        "{:>7} {:>8} {:>8} {:>6} {}",
        "t (s)",
        "forked",
        "RSS MiB",
        "CPU %",
        names.join(" ")
    );
}

fn print_row(s: &Sample) {
    let cells: Vec<String> = s
        .entries
        .iter()
        .map(|e| match e {
            Some(n) => format!("{n:>15}"),
            None => format!("{:>15}", "-"),
        })
        .collect();
    let t = if s.after {
        format!("{:>7}", format!("{:.0}*", s.t))
    } else {
        format!("{:>7.0}", s.t)
    };
    println!(
        "{t} {:>8} {:>8.1} {:>6.1} {}",
        s.forked,
        s.rss_kib as f64 / 1024.0,
        s.cpu_pct,
        cells.join(" ")
    );
}

fn report(
    samples: &[Sample],
    opts: &Options,
    seconds: f64,
    drops: Option<serde_json::Value>,
) -> Result<()> {
    let churn: Vec<&Sample> = samples.iter().filter(|s| s.t > 0.0 && !s.after).collect();
    let baseline = &samples[0];
    let after = samples.last().expect("samples");
    let forked = after.forked;
    println!(
        "\n(* = after the churn ended; the parent is still traced.) {forked} children in {:.0} s ({}/s asked, {:.0}/s made)",
        seconds,
        opts.rate,
        forked as f64 / seconds
    );
    let minute = 60.0_f64.min(seconds / 2.0);
    let mut first: Vec<f64> = churn
        .iter()
        .filter(|s| s.t <= minute)
        .map(|s| s.rss_kib as f64 / 1024.0)
        .collect();
    let mut last: Vec<f64> = churn
        .iter()
        .filter(|s| s.t >= seconds - minute)
        .map(|s| s.rss_kib as f64 / 1024.0)
        .collect();
    if first.is_empty() || last.is_empty() {
        bail!("too few samples for a verdict (use --minutes ≥ 1)");
    }
    let (f, l) = (median(&mut first), median(&mut last));
    let growth = l - f;
    // Allocator noise is a few MiB; a leak of a few hundred bytes per child is tens of MiB.
    let rss_flat = growth <= (f * 0.10).max(4.0);
    println!(
        "RSS: first minute {f:.1} MiB, last minute {l:.1} MiB ({growth:+.1} MiB, {:+.1} %): {}",
        growth / f * 100.0,
        if rss_flat { "flat" } else { "GROWING" }
    );
    let mut bounded = true;
    for (i, name) in MAPS.iter().enumerate() {
        let during = |range: &dyn Fn(f64) -> bool| {
            churn
                .iter()
                .filter(|s| range(s.t))
                .filter_map(|s| s.entries[i])
                .max()
        };
        let (Some(first_max), Some(last_max)) =
            (during(&|t| t <= minute), during(&|t| t >= seconds - minute))
        else {
            continue;
        };
        let base = baseline.entries[i].unwrap_or(0);
        let end = after.entries[i].unwrap_or(0);
        let per_process = PER_PROCESS.contains(name);
        // Bounded: the last minute's peak is not above the first minute's by more than noise
        // (the number of children alive at a sampling moment varies).
        let flat = last_max <= first_max + first_max / 4 + 16;
        // Reaped: back near the baseline, which was taken before the parent made a call; the
        // parent is still traced and keeps one entry per syscall (or file) it uses.
        // The parent's keys may hold a slot on every CPU.
        let allowance = if name.ends_with("_SLOTS") {
            PARENT_ENTRIES * std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
        } else {
            PARENT_ENTRIES
        };
        let reaped = !per_process || end <= base + base / 10 + allowance;
        bounded &= flat && reaped;
        println!(
            "{name}: baseline {base}, first-minute peak {first_max}, last-minute peak {last_max}, after {end}: {}{}",
            if flat { "bounded" } else { "GROWING" },
            match (per_process, reaped) {
                (false, _) => " (not per process)",
                (true, true) => ", reaped",
                (true, false) => ", NOT REAPED",
            }
        );
    }
    if let Some(d) = drops {
        println!("drops (run.json): {d}");
    }
    if !rss_flat || !bounded {
        bail!("scalp-bpf's memory or maps grew under process churn");
    }
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// A process's CPU time between two readings.
struct Cpu {
    ticks: u64,
    at: Instant,
    hz: f64,
}

impl Cpu {
    fn of(pid: u32) -> Result<Cpu> {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(Cpu {
            ticks: cpu_ticks(pid)?,
            at: Instant::now(),
            hz,
        })
    }

    fn percent_since_last(&mut self, pid: u32) -> Result<f64> {
        let ticks = cpu_ticks(pid)?;
        let secs = self.at.elapsed().as_secs_f64();
        let pct = (ticks - self.ticks) as f64 / self.hz / secs.max(1e-3) * 100.0;
        self.ticks = ticks;
        self.at = Instant::now();
        Ok(pct)
    }
}

/// utime + stime of a process, clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the comm (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// The maps one scalp-bpf process holds, opened by id.
struct ScalpMaps {
    maps: Vec<(String, BpfMap)>,
}

impl ScalpMaps {
    /// The maps in `pid`'s descriptor table (its /proc/PID/fdinfo says which are maps).
    fn of(pid: u32) -> Result<ScalpMaps> {
        let mut maps = Vec::new();
        for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))?.flatten() {
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let Some(id) = text
                .lines()
                .find_map(|l| l.strip_prefix("map_id:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let map = BpfMap::open(id)?;
            maps.push((map.name.clone(), map));
        }
        for name in MAPS {
            if !maps.iter().any(|(n, _)| n == name) {
                eprintln!("(scalp-bpf holds no map {name})");
            }
        }
        Ok(ScalpMaps { maps })
    }

    fn entries(&self, name: &str) -> Option<u64> {
        let (_, map) = self.maps.iter().find(|(n, _)| n == name)?;
        if name == "TRACED" {
            map.mapped(|b| b.iter().filter(|&&b| b & 1 != 0).count() as u64)
                .ok()
        } else if name.ends_with("_SLOTS") {
            // A slot is taken when its key's tgid (its first 4 bytes) is not 0.
            let size = map.value_size.max(4) as usize;
            map.mapped(|b| b.chunks(size).filter(|s| s[..4] != [0; 4]).count() as u64)
                .ok()
        } else {
            map.count().ok()
        }
    }
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr`, as bytes (the commands used here fit in its first 24).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }

    fn u32_at(mut self, at: usize, v: u32) -> Attr {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64_at(mut self, at: usize, v: u64) -> Attr {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, mut attr: Attr) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of the size passed; any pointers in it
    // point to live buffers of the sizes the command expects.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A map opened by id (a descriptor of our own).
struct BpfMap {
    fd: OwnedFd,
    name: String,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

impl BpfMap {
    fn open(id: u32) -> Result<BpfMap> {
        let fd = bpf(BPF_MAP_GET_FD_BY_ID, Attr::new().u32_at(0, id))
            .with_context(|| format!("open map {id}"))?;
        // SAFETY: the kernel just returned this descriptor to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16].
        let mut info = [0u8; 88];
        bpf(
            BPF_OBJ_GET_INFO_BY_FD,
            Attr::new()
                .u32_at(0, fd.as_raw_fd() as u32)
                .u32_at(4, info.len() as u32)
                .u64_at(8, info.as_mut_ptr() as u64),
        )
        .with_context(|| format!("info of map {id}"))?;
        let word = |i: usize| u32::from_ne_bytes(info[i * 4..i * 4 + 4].try_into().expect("4"));
        let name = &info[24..40];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Ok(BpfMap {
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
            key_size: word(2),
            value_size: word(3),
            max_entries: word(4),
            fd,
        })
    }

    /// Entries now: a walk of the keys (values are not read).
    fn count(&self) -> std::io::Result<u64> {
        let mut key = vec![0u8; self.key_size as usize];
        let mut next = vec![0u8; self.key_size as usize];
        let mut n = 0;
        loop {
            let attr = Attr::new()
                .u32_at(0, self.fd.as_raw_fd() as u32)
                .u64_at(8, if n == 0 { 0 } else { key.as_ptr() as u64 })
                .u64_at(16, next.as_mut_ptr() as u64);
            match bpf(BPF_MAP_GET_NEXT_KEY, attr) {
                Ok(_) => {
                    n += 1;
                    key.copy_from_slice(&next);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(n),
                Err(e) => return Err(e),
            }
        }
    }

    /// `count` of the bytes of an mmappable array (TRACED, SYSCALL_SLOTS).
    fn mapped(&self, count: impl FnOnce(&[u8]) -> u64) -> std::io::Result<u64> {
        let len = self.max_entries as usize * self.value_size as usize;
        // SAFETY: a read-only shared mapping of the whole array, unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `len` readable bytes at `addr`, alive until the munmap.
        let bytes = unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len) };
        let n = count(bytes);
        // SAFETY: unmapping exactly what was mapped.
        unsafe { libc::munmap(addr, len) };
        Ok(n)
    }
}
