//! `cargo xtask test`: unit tests, then the acceptance tests (pytest, as root, against the real
//! kernel programs, real servers and real client drivers), then — for the whole suite, not with
//! `-k` or `--acceptance-only` — the core subset on every kernel of the matrix under QEMU
//! (`crate::vm`, `--kernel all`): what CI runs.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{
    root,
    setup::{self, Profile, sh},
};

pub fn run(filter: Option<&str>, acceptance_only: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the tests load eBPF programs: run them as root");
    }
    setup::run(Profile::Test)?;
    if !acceptance_only {
        lint()?;
        sh(Command::new("cargo").current_dir(root()).args([
            "test",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
        ]))?;
    }
    let scalp = setup::build_release()?;
    let mut pytest = Command::new(setup::venv().join("bin/python"));
    pytest
        .current_dir(root())
        .args(["-m", "pytest", "tests", "-v", "-ra", "--durations=15"])
        .env("SCALP_BPF", &scalp)
        .env("SCALP_XTASK", std::env::current_exe()?);
    if let Some(k) = filter {
        pytest.args(["-k", k]);
    }
    sh(&mut pytest)?;
    if filter.is_none() && !acceptance_only {
        // The release binary is built: the matrix reuses it.
        crate::vm::run(&crate::vm::VmArgs::all_with(scalp))?;
    }
    Ok(())
}

/// Formatting and clippy (with the workspace lints, warnings denied) on every crate, the kernel
/// programs included (built for the BPF target, as build.rs builds them).
pub fn lint() -> Result<()> {
    setup::rust()?;
    sh(Command::new("cargo")
        .current_dir(root())
        .args(["fmt", "--all", "--check"]))?;
    sh(Command::new("cargo").current_dir(root()).args([
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    sh(Command::new("cargo")
        .current_dir(root().join("tracer-ebpf"))
        // `-Z build-std` on the stable toolchain (../shared/TOOLCHAIN.md).
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))
}
