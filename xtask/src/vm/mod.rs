//! `cargo xtask test --kernel 5.10|6.1|6.12|all`: the kernel matrix. Runs the release scalp-bpf
//! on other kernels than the host's, in QEMU, and checks a core acceptance subset there.
//!
//! - **Kernels**: Debian's own packages with BTF, pinned by version and SHA-256
//!   ([`kernels::KERNELS`]), fetched once with `apt-get download` through a private apt
//!   configuration (the host's apt sources and state are untouched) and unpacked with
//!   `dpkg-deb -x` into a machine-wide cache (`~/.cache/scalp-bpf/vm`, or `$SCALP_VM_CACHE`), so
//!   fresh clones — CI's — do not download them again.
//! - **Why TCG**: KVM guests do not run on these machines (`-cpu host`/`max` fail on MSRs, the
//!   default CPU hangs early), so QEMU emulates (`-accel tcg -cpu max`; `max` has SSE4.2 and the
//!   rest a distribution kernel expects). It is slow, so the guest is as small as it can be.
//! - **How the guest boots**: `-kernel` with the ELF vmlinux unpacked from Debian's vmlinuz
//!   (QEMU enters it through PVH: no firmware real mode, no in-guest decompression, half the
//!   boot's emulated CPU time) and an initramfs built here
//!   ([`initramfs`]): static busybox, the init script `tests/vm/guest-init.sh`, scalp-bpf and the
//!   xtask binary (the workloads, [`workload`]) with their shared libraries from the host, and
//!   the kernel package's own modules for virtio-pci, virtio-blk and ext4. No root filesystem, no
//!   network, no 9p: nothing but three virtio disks — vda (ext4, for file I/O), vdb (raw, for
//!   O_DIRECT block I/O, so /sys/block/vdb/stat is ground truth) and vdc (results).
//! - **Where results come from**: the init runs each check of the plan (`/vm/plan.sh`, written
//!   by [`plan`]) as `scalp-bpf run --output … -- workload`, keeps its exit code, stdout, stderr
//!   (aya's verifier log included), output tables and the disk's stat before/after, then writes
//!   it all as a tar archive onto vdc and powers off. The host unpacks it into
//!   `target/vm/<kernel>/results/` and the checks (`tests/vm/vm_checks.py`, pytest + pyarrow, the
//!   acceptance tests' own environment) compare the Parquet tables with the workloads' known
//!   numbers and the device counters. The serial console (`target/vm/<kernel>/serial.log`, host
//!   timestamps) carries progress lines and, on a crash, the kernel's panic.
//! - Every check that does not pass is a failure (nonzero exit); a guest that panics, hangs past
//!   `--vm-timeout` or writes no results fails every check of that kernel.
//!
//! Usage (as root; findings per kernel: tests/vm/FINDINGS.md):
//!
//! ```sh
//! cargo xtask test --kernel all                      # 5.10, 6.1, 6.12, every check
//! cargo xtask test --kernel 5.10 --check syscalls    # one kernel, one check
//! cargo xtask test --kernel 6.1 --scalp-arg=--tracers --scalp-arg=syscalls,fileio
//! cargo xtask test --kernel 5.10 --scalp-verbose 2 --scalp-bpf /tmp/patched/scalp-bpf
//! cargo xtask test --kernel 5.10 --check fileio --check writeback \
//!     --guest-ftrace block:block_rq_insert --guest-ftrace writeback:writeback_single_inode_start
//! ```
//!
//! Each run leaves `target/vm/<kernel>/`: serial.log, timing.json, plan.json, initramfs.cpio and
//! results/ (per check: exit, stdout, stderr, out/ tables, disk stat; the guest's dmesg,
//! available_events, event_formats and its BTF as btf_vmlinux, for `bpftool btf dump file`).

mod initramfs;
pub(crate) mod kernels;
mod plan;
mod qemu;
pub mod workload;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{root, setup};

/// The options of `cargo xtask test` that drive the kernel matrix.
#[derive(Args, Debug)]
pub struct VmArgs {
    /// Run the core acceptance subset in QEMU on this kernel instead of the host's: 5.10, 6.1,
    /// 6.12, or all (may be repeated).
    #[arg(long = "kernel", value_name = "VERSION")]
    pub kernels: Vec<String>,
    /// Only these checks (syscalls, fileio, blockio, writeback; may be repeated).
    #[arg(long = "check", value_name = "NAME", requires = "kernels")]
    pub checks: Vec<String>,
    /// One more argument for every `scalp-bpf run` in the guest, after `run` (may be repeated:
    /// `--scalp-arg=--tracers --scalp-arg=syscalls`).
    #[arg(
        long = "scalp-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "kernels"
    )]
    pub scalp_args: Vec<String>,
    /// Verbosity of scalp-bpf in the guest (-v, -vv: its -v count).
    #[arg(long, default_value_t = 0, requires = "kernels")]
    pub scalp_verbose: u8,
    /// SCALP_LOG for scalp-bpf in the guest (e.g. debug).
    #[arg(long, requires = "kernels")]
    pub scalp_log: Option<String>,
    /// Test this scalp-bpf binary instead of building the workspace's release binary.
    #[arg(long, requires = "kernels")]
    pub scalp_bpf: Option<PathBuf>,
    /// `ulimit -l` in the guest before each run (default: the kernel's own limit for init).
    #[arg(long, requires = "kernels")]
    pub memlock: Option<String>,
    /// Record this ftrace event in the guest around every check (may be repeated:
    /// `--guest-ftrace block:block_rq_issue`): `results/<check>/trace` (during the check) and
    /// `trace_before` (since the previous one).
    #[arg(long, value_name = "EVENT", requires = "kernels")]
    pub guest_ftrace: Vec<String>,
    /// Wall-clock limit of one guest, in seconds.
    #[arg(long, default_value_t = 600, requires = "kernels")]
    pub vm_timeout: u64,
    /// vCPUs of the guest.
    #[arg(long, default_value_t = 2, requires = "kernels")]
    pub vm_cpus: u32,
}

impl VmArgs {
    /// Every kernel and check, with the defaults, testing `scalp` (what `cargo xtask test` runs
    /// after the host's tests).
    pub fn all_with(scalp: PathBuf) -> VmArgs {
        VmArgs {
            kernels: vec!["all".to_owned()],
            checks: Vec::new(),
            scalp_args: Vec::new(),
            scalp_verbose: 0,
            scalp_log: None,
            scalp_bpf: Some(scalp),
            memlock: None,
            guest_ftrace: Vec::new(),
            vm_timeout: 600,
            vm_cpus: 2,
        }
    }
}

/// Debian packages the matrix needs on the host.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "e2fsprogs",
    "xz-utils",
    "zstd",
    "dpkg",
    "tar",
];

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SCALP_VM_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/scalp-bpf/vm")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// The release scalp-bpf of this workspace (built), or the one given.
fn scalp_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--scalp-bpf {}: no such file", p.display());
        }
        return Ok(p.to_owned());
    }
    // rust-src and bpf-linker, for the kernel programs inside the binary.
    setup::run(setup::Profile::Demo)?;
    setup::sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "tracer-user",
    ]))?;
    Ok(target_dir().join("release/scalp-bpf"))
}

struct Outcome {
    label: &'static str,
    prepare_s: f64,
    boot: Option<qemu::Boot>,
    error: Option<String>,
}

pub fn run(args: &VmArgs) -> Result<()> {
    let mut labels: Vec<&'static kernels::Kernel> = vec![];
    for k in &args.kernels {
        let picked: Vec<_> = if k == "all" {
            kernels::KERNELS.iter().collect()
        } else {
            vec![kernels::by_label(k).with_context(|| {
                let known: Vec<_> = kernels::KERNELS.iter().map(|k| k.label).collect();
                format!(
                    "--kernel {k}: not in the matrix ({} or all)",
                    known.join(", ")
                )
            })?]
        };
        for p in picked {
            if !labels.iter().any(|l| l.label == p.label) {
                labels.push(p);
            }
        }
    }
    let checks = plan::select(&args.checks)?;
    plan::check_args("--scalp-arg", &args.scalp_args)?;
    plan::check_args("--guest-ftrace", &args.guest_ftrace)?;
    setup::apt(PACKAGES)?;
    setup::python()?;
    let scalp = scalp_binary(args.scalp_bpf.as_deref())?;
    let xtask = std::env::current_exe().context("the xtask binary")?;
    let all_start = Instant::now();
    let out_root = target_dir().join("vm");
    let mut outcomes = vec![];
    for kernel in &labels {
        let dir = out_root.join(kernel.label);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let t = Instant::now();
        let prepared = prepare(kernel, &dir, &scalp, &xtask, &checks, args);
        let prepare_s = t.elapsed().as_secs_f64();
        let vmlinuz = match prepared {
            Ok(v) => v,
            Err(e) => {
                eprintln!("vm {}: {e:#}", kernel.label);
                outcomes.push(Outcome {
                    label: kernel.label,
                    prepare_s,
                    boot: None,
                    error: Some(format!("{e:#}")),
                });
                continue;
            }
        };
        let guest = qemu::Guest {
            kernel: &vmlinuz,
            initramfs: &dir.join("initramfs.cpio"),
            dir: &dir,
            limit: Duration::from_secs(args.vm_timeout),
            cpus: args.vm_cpus,
            label: kernel.label,
        };
        eprintln!(
            "vm {}: booting {} under QEMU/TCG",
            kernel.label, kernel.release
        );
        let mut error = None;
        let boot = guest.boot()?;
        if let Err(e) = qemu::unpack_results(&dir, &dir.join("results")) {
            error = Some(format!("{e:#}"));
        }
        write_timing(&dir, prepare_s, &boot)?;
        outcomes.push(Outcome {
            label: kernel.label,
            prepare_s,
            boot: Some(boot),
            error,
        });
    }
    let matrix_s = all_start.elapsed().as_secs_f64();
    let checked = checks_pass(&out_root, &labels, &scalp);
    report(&outcomes, matrix_s);
    if !checked? {
        // A plain exit: the checks already said what failed, a backtrace would add nothing.
        eprintln!("xtask: the kernel matrix has failing checks (details above)");
        std::process::exit(1);
    }
    Ok(())
}

/// The kernel image and the initramfs for one kernel, with the plan of this run.
fn prepare(
    kernel: &kernels::Kernel,
    dir: &Path,
    scalp: &Path,
    xtask: &Path,
    checks: &[&'static plan::Check],
    args: &VmArgs,
) -> Result<PathBuf> {
    let tree = kernels::fetch(kernel, &cache_dir())?;
    let mut img = initramfs::Initramfs::default();
    let init = std::fs::read(root().join("tests/vm/guest-init.sh"))?;
    img.file("/init", init, 0o755);
    // busybox-static has no libraries; were /bin/busybox another build, they would come along.
    img.program(Path::new("/bin/busybox"), "/bin/busybox")?;
    for d in ["/dev", "/proc", "/sys", "/tmp", "/mnt", "/results"] {
        img.dir(d);
    }
    img.program(scalp, "/vm/scalp-bpf")?;
    img.program(xtask, "/vm/xtask")?;
    let modules = initramfs::add_modules(&mut img, &tree, kernel.release)?;
    let plan = plan::Plan {
        checks,
        scalp_args: &args.scalp_args,
        verbose: args.scalp_verbose,
        scalp_log: args.scalp_log.as_deref(),
        memlock: args.memlock.as_deref(),
        ftrace: &args.guest_ftrace,
    };
    img.file("/vm/plan.sh", plan.script().into_bytes(), 0o644);
    img.write(&dir.join("initramfs.cpio"))?;
    let meta = serde_json::json!({
        "kernel": kernel.label,
        "package": kernel.package,
        "version": kernel.version,
        "release": kernel.release,
        "modules": modules,
        "scalp_bpf": scalp,
        "checks": plan.json(),
    });
    std::fs::write(dir.join("plan.json"), serde_json::to_string_pretty(&meta)?)?;
    kernels::vmlinux(&tree, kernel)
}

fn write_timing(dir: &Path, prepare_s: f64, boot: &qemu::Boot) -> Result<()> {
    let t = serde_json::json!({
        "prepare_s": prepare_s,
        "boot_s": boot.boot_s,
        "wall_s": boot.wall_s,
        "qemu_cpu_s": boot.cpu_s,
        "finished": boot.finished,
        "timed_out": boot.timed_out,
    });
    std::fs::write(dir.join("timing.json"), serde_json::to_string_pretty(&t)?)?;
    Ok(())
}

/// Runs the checks over every kernel's results; true when all pass.
fn checks_pass(out_root: &Path, kernels: &[&kernels::Kernel], scalp: &Path) -> Result<bool> {
    let labels: Vec<&str> = kernels.iter().map(|k| k.label).collect();
    let status = Command::new(setup::venv().join("bin/python"))
        .current_dir(root())
        .args([
            "-m",
            "pytest",
            "tests/vm/vm_checks.py",
            "-v",
            "-rfE",
            "--tb=short",
        ])
        .args(["-p", "no:cacheprovider", "-p", "vm_matrix"])
        .env("PYTHONPATH", root().join("tests/vm"))
        .env("SCALP_VM_RESULTS", out_root)
        .env("SCALP_VM_KERNELS", labels.join(","))
        .env("SCALP_BPF", scalp)
        .status()
        .context("running pytest")?;
    Ok(status.success())
}

fn report(outcomes: &[Outcome], matrix_s: f64) {
    eprintln!();
    eprintln!("kernel  prepare  boot(to init)  VM wall  QEMU CPU  guest");
    for o in outcomes {
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}s"));
        let (boot, wall, cpu, state) = match &o.boot {
            Some(b) => (
                fmt(b.boot_s),
                fmt(Some(b.wall_s)),
                fmt(Some(b.cpu_s)),
                if b.timed_out {
                    "timed out (killed)".to_owned()
                } else if !b.finished {
                    format!("did not finish: see {}", b.serial.display())
                } else {
                    "finished".to_owned()
                },
            ),
            None => ("-".into(), "-".into(), "-".into(), "not booted".to_owned()),
        };
        let state = match &o.error {
            Some(e) => format!("{state}; {e}"),
            None => state,
        };
        eprintln!(
            "{:<7} {:>7}  {:>13}  {:>7}  {:>8}  {state}",
            o.label,
            format!("{:.1}s", o.prepare_s),
            boot,
            wall,
            cpu
        );
    }
    eprintln!("whole matrix: {matrix_s:.1}s (without the checks)");
}
