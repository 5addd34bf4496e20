//! Idempotent installation of everything the tasks need: the Rust pieces of the eBPF build, Debian
//! packages, and the Python packages of the acceptance tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use crate::root;

/// The bpf-linker that builds with this toolchain (../shared/TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.10.4";
/// The S3-compatible server of the shipping tests: a real S3 API over a directory. 0.14.1 is the
/// newest that builds with Rust 1.95 (0.17 declares 1.96).
const S3S_FS_VERSION: &str = "0.14.1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Build and run the demo.
    Demo,
    /// Also the servers, tools and Python packages of the tests.
    Test,
    /// Also the peers the benchmarks compare against.
    Bench,
}

/// Debian packages per profile.
fn packages(profile: Profile) -> Vec<&'static str> {
    let mut p = vec![];
    if profile != Profile::Demo {
        p.extend([
            "linux-perf",
            "mariadb-server",
            "postgresql",
            "postgresql-contrib",
            "memcached",
            "rabbitmq-server",
            "fio",
            "bpftool",
            "bpftrace",
            // The HTTP tests: nginx in front of uWSGI; uWSGI (PyPI) compiles its C core.
            "nginx",
            "gcc",
            "python3-dev",
            // tests/test_report.py opens `scalp-bpf report`'s page in headless Chromium.
            "chromium",
            // `scalp-bpf top`'s tests drive it in a tmux of a known size.
            "tmux",
        ]);
    }
    if profile == Profile::Bench {
        p.extend(["bpfcc-tools", "linux-headers-amd64"]);
        // Load generators of bench http/mix (wrk) and bench cache (memaslap, as memcaslap).
        p.extend(["wrk", "libmemcached-tools"]);
    }
    p
}

pub fn run(profile: Profile) -> Result<()> {
    rust()?;
    apt(&packages(profile))?;
    if profile != Profile::Demo {
        python()?;
        crate::pythons::install()?;
        tracefs()?;
        s3s_fs()?;
    }
    if profile == Profile::Bench {
        bcc_kernel_headers()?;
    }
    Ok(())
}

/// Runs a command, failing with its name when it fails.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin").join(name)
}

/// rust-src for `-Z build-std=core`, and bpf-linker.
pub fn rust() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "stable",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: installing rust-src");
        sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "stable"]))?;
    }
    let linker = cargo_bin("bpf-linker");
    let version = output(Command::new(&linker).arg("--version")).unwrap_or_default();
    if !version.contains(BPF_LINKER_VERSION) {
        eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION}");
        sh(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }
    Ok(())
}

/// s3s-fs, for tests/test_ship.py (tests/servers.py starts it).
fn s3s_fs() -> Result<()> {
    let bin = cargo_bin("s3s-fs");
    let version = output(Command::new(&bin).arg("--version")).unwrap_or_default();
    if version.trim() == format!("s3s-fs {S3S_FS_VERSION}") {
        return Ok(());
    }
    eprintln!("setup: installing s3s-fs {S3S_FS_VERSION} (a few minutes)");
    sh(Command::new("cargo").args([
        "install",
        "s3s-fs",
        "--version",
        S3S_FS_VERSION,
        "--features",
        "binary",
        "--locked",
        "--force",
    ]))
}

/// Installs the Debian packages not installed yet.
pub fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: apt-get install {}", missing.join(" "));
    sh(Command::new("apt-get").arg("update").arg("-q"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The virtualenv of the acceptance tests.
pub fn venv() -> PathBuf {
    root().join(".venv")
}

/// A venv with tests/requirements.txt installed (redone when the file changes).
pub fn python() -> Result<()> {
    let venv = venv();
    let requirements = root().join("tests/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).context("tests/requirements.txt")?;
    let stamp = venv.join(".requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    if !venv.join("bin/python").exists() {
        eprintln!("setup: creating {}", venv.display());
        sh(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    eprintln!("setup: pip install -r tests/requirements.txt");
    sh(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

/// perf and the tests read tracepoint formats from tracefs.
fn tracefs() -> Result<()> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() {
        return Ok(());
    }
    sh(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

/// BCC compiles its programs against kernel headers it finds under /lib/modules/$(uname -r).
/// This kernel ships none; Debian's generic 6.1 headers are close enough for syscount's
/// tracepoints. Only links that do not exist are created.
fn bcc_kernel_headers() -> Result<()> {
    let release = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let modules = Path::new("/lib/modules").join(release.trim());
    if modules.join("build").exists() {
        return Ok(());
    }
    let src = Path::new("/usr/src");
    let find = |suffix: &str| -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(src)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("linux-headers-") && n.ends_with(suffix))
            })
            .collect();
        dirs.sort();
        dirs.pop()
    };
    let (Some(build), Some(source)) = (find("-amd64"), find("-common")) else {
        eprintln!("setup: no Debian kernel headers found; BCC peers will be skipped");
        return Ok(());
    };
    std::fs::create_dir_all(&modules)?;
    std::os::unix::fs::symlink(build, modules.join("build"))?;
    if !modules.join("source").exists() {
        std::os::unix::fs::symlink(source, modules.join("source"))?;
    }
    Ok(())
}

/// Builds the scalp-bpf release binary and returns its path: under CARGO_TARGET_DIR when it is
/// set (cargo builds there; the workspace's own target/ may hold an older binary).
pub fn build_release() -> Result<PathBuf> {
    sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "tracer-user",
    ]))?;
    Ok(target_dir(std::env::var_os("CARGO_TARGET_DIR"), &root()).join("release/scalp-bpf"))
}

/// Where cargo, run in `root`, puts its output: CARGO_TARGET_DIR (relative to `root`), else
/// `root`/target.
fn target_dir(cargo_target_dir: Option<std::ffi::OsString>, root: &Path) -> PathBuf {
    match cargo_target_dir {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_binary_is_where_cargo_target_dir_says() {
        let root = Path::new("/work/repo");
        assert_eq!(target_dir(None, root), Path::new("/work/repo/target"));
        assert_eq!(
            target_dir(Some("".into()), root),
            Path::new("/work/repo/target")
        );
        assert_eq!(
            target_dir(Some("/work/target-x".into()), root),
            Path::new("/work/target-x")
        );
        assert_eq!(
            target_dir(Some("build/t".into()), root),
            Path::new("/work/repo/build/t")
        );
    }

    #[test]
    fn each_profile_installs_what_the_previous_one_does_and_more() {
        let (demo, test, bench) = (
            packages(Profile::Demo),
            packages(Profile::Test),
            packages(Profile::Bench),
        );
        assert!(
            demo.is_empty(),
            "the demo needs no Debian package: {demo:?}"
        );
        assert!(test.iter().all(|p| bench.contains(p)));
        assert!(bench.len() > test.len());
        // What the acceptance tests run besides scalp-bpf: the servers, bpftool (nothing left
        // loaded after a run), bpftrace and perf (the peers beside it), fio.
        for p in [
            "mariadb-server",
            "postgresql",
            "memcached",
            "rabbitmq-server",
            "nginx",
            "bpftool",
            "bpftrace",
            "linux-perf",
            "fio",
            "tmux",
        ] {
            assert!(test.contains(&p), "{p} missing from the test profile");
        }
        let mut unique = test.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), test.len(), "a package listed twice");
    }
}
