//! Starting and stopping tracers around a workload.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// A workload started with `--wait`: its PID is known, it runs when released.
pub struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    pub pid: u32,
}

impl Held {
    pub fn start(cmd: &mut Command) -> Result<Held> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {cmd:?}"))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let pid = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow!("workload said {line:?}, not 'ready PID'"))?;
        Ok(Held {
            child,
            stdin,
            stdout,
            pid,
        })
    }

    /// Lets it run; returns all of its output after the ready line.
    pub fn release_all(mut self) -> Result<String> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n")?;
        }
        let mut out = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut out)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("workload failed: {status}");
        }
        Ok(out)
    }

    /// Lets it run; returns its last line of output.
    pub fn release(mut self) -> Result<String> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n")?;
        }
        let mut out = String::new();
        let mut line = String::new();
        while self.stdout.read_line(&mut line)? > 0 {
            out = std::mem::take(&mut line);
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("workload failed: {status}");
        }
        Ok(out)
    }
}

/// A tracer running in the background until stopped.
pub struct Tracer {
    child: Child,
    name: String,
    /// A process kept alive while the tracer runs (and killed with it).
    bystander: Option<Child>,
    /// Output to delete once the tracer has stopped.
    scratch: Option<PathBuf>,
}

impl Tracer {
    /// Starts `cmd` and waits until `ready` says it is attached (at most 60 s).
    pub fn start(name: &str, cmd: &mut Command, ready: Ready) -> Result<Tracer> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        match ready {
            Ready::Line(prefix) => {
                let stdout = child.stdout.take().expect("piped");
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut lines = BufReader::new(stdout).lines();
                    let mut sent = false;
                    for line in lines.by_ref() {
                        let Ok(line) = line else { break };
                        if !sent && line.contains(prefix) {
                            let _ = tx.send(());
                            sent = true;
                        }
                    }
                });
                rx.recv_timeout(deadline - Instant::now())
                    .map_err(|_| anyhow!("{name} did not get ready"))?;
            }
            Ready::File(path) => {
                while !path.exists() {
                    if Instant::now() > deadline || child.try_wait()?.is_some() {
                        let _ = child.kill();
                        bail!("{name} did not get ready");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        // Let the attach settle.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Tracer {
            child,
            name: name.to_owned(),
            bystander: None,
            scratch: None,
        })
    }

    pub fn with_scratch(mut self, dir: PathBuf) -> Tracer {
        self.scratch = Some(dir);
        self
    }

    pub fn with_bystander(mut self, bystander: Option<Child>) -> Tracer {
        self.bystander = bystander;
        self
    }

    pub fn stop(mut self) -> Result<()> {
        if let Some(mut b) = self.bystander.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                bail!("{} did not stop", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(dir) = self.scratch.take() {
            remove(&dir);
        }
        let status = self.child.wait()?;
        if !status.success() && status.code() != Some(130) {
            bail!("{} failed: {status}", self.name);
        }
        Ok(())
    }
}

/// How to tell a tracer is attached.
pub enum Ready {
    /// A line on stdout containing this.
    Line(&'static str),
    /// This file exists.
    File(PathBuf),
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Median of a non-empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A fresh scratch path under target/bench.
pub fn scratch(name: &str) -> PathBuf {
    let dir = crate::root().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

pub fn remove(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_odd_even_unsorted_and_empty_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.5]), 7.5);
        assert!(median(&mut []).is_nan());
        // Sorted by total order: a NaN sample sorts last instead of scrambling the rest.
        assert_eq!(median(&mut [f64::NAN, 1.0, 2.0]), 2.0);
    }
}
