//! One guest boot: disk images, the QEMU command line, the serial console (logged with host
//! timestamps, `SCALP-VM` lines echoed live), a wall-clock limit, and the results disk unpacked.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::setup::sh;

/// What a boot produced, for the report.
pub struct Boot {
    /// Host seconds from QEMU's start to the guest init's first line.
    pub boot_s: Option<f64>,
    /// Host seconds QEMU ran.
    pub wall_s: f64,
    /// CPU seconds QEMU used (user + system): the cost on a busy machine, where wall time
    /// depends on the neighbours.
    pub cpu_s: f64,
    /// The guest reached the end of its init (results written).
    pub finished: bool,
    pub timed_out: bool,
    pub serial: PathBuf,
}

pub struct Guest<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub dir: &'a Path,
    pub limit: Duration,
    pub cpus: u32,
    pub label: &'a str,
}

fn sparse(path: &Path, size: u64) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    Ok(())
}

/// vda: a fresh ext4 without a journal (no jbd2 writes of its own while a check counts; the
/// acceptance tests' loop device is made the same way), vdb: raw, for O_DIRECT to the device,
/// vdc: zeros, where the guest writes its results as a tar archive.
fn disks(dir: &Path) -> Result<[PathBuf; 3]> {
    let [fs, raw, results] = ["fs.img", "raw.img", "results.img"].map(|n| dir.join(n));
    sparse(&fs, 128 << 20)?;
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal"])
        .arg(&fs))?;
    sparse(&raw, 64 << 20)?;
    sparse(&results, 1 << 30)?;
    Ok([fs, raw, results])
}

impl Guest<'_> {
    pub fn boot(&self) -> Result<Boot> {
        let disks = disks(self.dir)?;
        let serial_path = self.dir.join("serial.log");
        let mut serial = std::fs::File::create(&serial_path)?;
        let mut cmd = Command::new("qemu-system-x86_64");
        // TCG: KVM guests do not run on these machines (see the module doc of vm/mod.rs).
        cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "2048"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .args(["-serial", "stdio"])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initramfs)
            .args(["-append", "console=ttyS0 panic=-1 oops=panic edd=off quiet"]);
        for d in &disks {
            cmd.arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", d.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cpu_before = children_cpu_seconds();
        let start = Instant::now();
        let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().context("qemu stdout")?;
        let stderr = child.stderr.take().context("qemu stderr")?;
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("qemu: {line}"));
            }
        });
        let mut boot_s = None;
        let mut finished = false;
        let mut timed_out = false;
        loop {
            let left = self.limit.saturating_sub(start.elapsed());
            match rx.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(line) => {
                    let t = start.elapsed().as_secs_f64();
                    writeln!(serial, "{t:8.2} {line}")?;
                    if let Some(event) = line.strip_prefix("SCALP-VM ") {
                        if event.starts_with("init ") {
                            boot_s.get_or_insert(t);
                        }
                        if event.starts_with("done ") {
                            finished = true;
                        }
                        eprintln!("vm {} {t:7.1}s {event}", self.label);
                    } else if line.starts_with("qemu: ") || line.contains("Kernel panic") {
                        eprintln!("vm {} {t:7.1}s {line}", self.label);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if start.elapsed() >= self.limit {
                timed_out = true;
                eprintln!(
                    "vm {}: no poweroff after {:?}: killing QEMU",
                    self.label, self.limit
                );
                let _ = child.kill();
                break;
            }
        }
        let status = child.wait()?;
        let cpu_s = children_cpu_seconds() - cpu_before;
        let wall_s = start.elapsed().as_secs_f64();
        // The readers end with the pipes; anything still queued belongs in the log.
        while let Ok(line) = rx.try_recv() {
            writeln!(serial, "{:8.2} {line}", wall_s)?;
        }
        if !timed_out && !status.success() {
            eprintln!("vm {}: QEMU exited with {status}", self.label);
        }
        Ok(Boot {
            boot_s,
            wall_s,
            cpu_s,
            finished,
            timed_out,
            serial: serial_path,
        })
    }
}

/// User + system CPU seconds of this process's reaped children (QEMU's share is the
/// difference around its wait).
fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Unpacks the tar archive the guest wrote onto the results disk.
pub fn unpack_results(dir: &Path, into: &Path) -> Result<()> {
    if into.exists() {
        std::fs::remove_dir_all(into)?;
    }
    std::fs::create_dir_all(into)?;
    let image = dir.join("results.img");
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&image)
        .arg("-C")
        .arg(into)
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!(
            "the results disk holds no readable archive: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
