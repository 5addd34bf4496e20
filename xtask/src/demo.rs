//! `cargo xtask demo`: build scalp-bpf and trace the bundled demo workload.

use std::process::Command;

use anyhow::Result;

use crate::{
    root,
    setup::{self, Profile, sh},
};

pub fn run() -> Result<()> {
    setup::run(Profile::Demo)?;
    let scalp = setup::build_release()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let out = root().join(format!("target/demo/run-{stamp}"));
    let me = std::env::current_exe()?;
    eprintln!("demo: tracing the demo workload into {}", out.display());
    sh(Command::new(&scalp)
        .arg("run")
        .arg("--output")
        .arg(&out)
        .args(["--interval", "500ms", "--"])
        .arg(&me)
        .args(["workload", "demo"]))?;
    sh(Command::new(&scalp).arg("summary").arg(&out))?;
    eprintln!("demo: the tables are in {}", out.display());
    Ok(())
}
