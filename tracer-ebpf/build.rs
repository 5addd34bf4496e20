use which::which;

/// Building this crate needs the `bpf-linker` binary, which cargo cannot express as a dependency.
/// Rebuild when that binary changes (aya-template does the same; see its build.rs for why).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found on PATH: {err}"),
    }
}
