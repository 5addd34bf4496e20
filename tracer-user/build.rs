use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds tracer-ebpf for bpfel-unknown-none with the stable toolchain (`-Z build-std=core` is
/// allowed by RUSTC_BOOTSTRAP=1 in .cargo/config.toml) and leaves the object in OUT_DIR, where
/// src/loader.rs embeds it. `AYA_BUILD_SKIP=1` skips this (clippy/check without bpf-linker);
/// the binary then refuses to run.
fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root_dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", package.manifest_path))?;
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if skip {
        let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
        std::fs::write(std::path::Path::new(&out).join("tracer"), b"")?;
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom("stable"),
    )
}
