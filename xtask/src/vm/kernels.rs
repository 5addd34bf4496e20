//! The kernels of the matrix, pinned, and how they are fetched: `apt-get download` of Debian's
//! kernel package through a private apt configuration (its own sources list, lists and cache
//! under the cache directory, so the host's apt sources and state are never touched), a SHA-256
//! check against the pin, then `dpkg-deb -x`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::setup::sh;

/// One pinned Debian kernel package with BTF (CONFIG_DEBUG_INFO_BTF=y in all three).
pub struct Kernel {
    /// What `--kernel` takes.
    pub label: &'static str,
    /// The suite that carries it.
    pub suite: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// Of the .deb, as apt fetched it when it was pinned.
    pub sha256: &'static str,
    /// `uname -r` of the kernel, the directory under /lib/modules.
    pub release: &'static str,
}

/// The `-unsigned` packages: the same kernel as the signed ones, without the Secure Boot
/// wrapper. To move a pin: `apt-cache madison` with the private configuration (see `apt_base`)
/// shows what the archive has now; update version, sha256 and release together.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        label: "5.10",
        suite: "bullseye",
        package: "linux-image-5.10.0-32-amd64-unsigned",
        version: "5.10.223-1",
        sha256: "53a0ada535b8b35b3ee80ead5ab88036591963941c42dff6881bdb741deebead",
        release: "5.10.0-32-amd64",
    },
    Kernel {
        label: "6.1",
        suite: "bookworm",
        package: "linux-image-6.1.0-50-amd64-unsigned",
        version: "6.1.176-1",
        sha256: "439422e41d2dbb840b60b81e3bf5e5955bfa56b7a8c268aec83c9ff882d421e6",
        release: "6.1.0-50-amd64",
    },
    Kernel {
        label: "6.12",
        suite: "bookworm-backports",
        package: "linux-image-6.12.95+deb12-amd64-unsigned",
        version: "6.12.95-1~bpo12+1",
        sha256: "d1bfac79e7318f67e4b2dc13698090d822af87d9e2db79b18db53c36b7e8eddd",
        release: "6.12.95+deb12-amd64",
    },
];

pub fn by_label(label: &str) -> Option<&'static Kernel> {
    KERNELS.iter().find(|k| k.label == label)
}

/// The archive the host's own apt uses (deb.debian.org here); every suite above is on it.
const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// `apt-get`/`apt-cache` with every path that matters pointed under `dir`: the host's sources,
/// lists, package cache and preferences are neither read nor written.
pub(crate) fn apt_base(program: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    cmd.arg("-q")
        .args([
            "-o",
            &opt("Dir::Etc::SourceList", &dir.join("sources.list")),
        ])
        .args([
            "-o",
            &opt("Dir::Etc::SourceParts", &dir.join("sources.list.d")),
        ])
        .args([
            "-o",
            &opt("Dir::Etc::Preferences", &dir.join("preferences")),
        ])
        .args([
            "-o",
            &opt("Dir::Etc::PreferencesParts", &dir.join("preferences.d")),
        ])
        .args(["-o", &opt("Dir::State::Lists", &dir.join("lists"))])
        .args(["-o", &opt("Dir::Cache", &dir.join("cache"))])
        // Only the package indices: no translations, no AppStream metadata.
        .args(["-o", "Acquire::Languages=none"])
        .args([
            "-o",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
        ])
        .args([
            "-o",
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
        ])
        .args([
            "-o",
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
        ])
        // The download directory is root's; apt's sandbox user could not write there.
        .args(["-o", "APT::Sandbox::User=root"]);
    cmd
}

pub(crate) fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// The extracted package (boot/, lib/modules/) under `cache`, fetched if not there yet.
pub fn fetch(kernel: &Kernel, cache: &Path) -> Result<PathBuf> {
    let tree = cache.join(format!("{}_{}", kernel.package, kernel.version));
    let done = tree.join(".extracted");
    if done.exists() {
        return Ok(tree);
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    let deb = debs.join(format!(
        "{}_{}_amd64.deb",
        kernel.package,
        kernel.version.replace(':', "%3a")
    ));
    if !deb.exists() || sha256(&deb)? != kernel.sha256 {
        download(kernel, cache, &debs)?;
    }
    check_pin(&deb, kernel.sha256)?;
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    eprintln!("vm: extracting {}", deb.display());
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    std::fs::write(&done, b"")?;
    Ok(tree)
}

/// Fails unless the file at `path` has the pinned SHA-256 `want`.
pub(crate) fn check_pin(path: &Path, want: &str) -> Result<()> {
    let got = sha256(path)?;
    if got != want {
        bail!(
            "{} has SHA-256 {got}, the pin says {want}: the archive changed this version?",
            path.display()
        );
    }
    Ok(())
}

static UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A private apt configuration under `apt` (its own lists and sources: Debian's `suites`, main),
/// for `apt_base`: packages of other suites are downloaded without touching the host's apt.
pub(crate) fn private_apt(apt: &Path, suites: &[&str]) -> Result<()> {
    for d in [
        "lists/partial",
        "cache/archives/partial",
        "sources.list.d",
        "preferences.d",
    ] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    let sources: String = suites
        .iter()
        .map(|s| format!("deb [signed-by={KEYRING}] {MIRROR} {s} main\n"))
        .collect();
    std::fs::write(apt.join("sources.list"), sources)?;
    Ok(())
}

fn download(kernel: &Kernel, cache: &Path, debs: &Path) -> Result<()> {
    let apt = cache.join("apt");
    private_apt(&apt, &["bullseye", "bookworm", "bookworm-backports"])?;
    let spec = format!("{}={}", kernel.package, kernel.version);
    eprintln!("vm: apt-get download {spec} (suite {})", kernel.suite);
    // The private lists, once per run: they cover all three suites.
    if !UPDATED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        sh(apt_base("apt-get", &apt).arg("update"))?;
    }
    let status = apt_base("apt-get", &apt)
        .current_dir(debs)
        .args(["download", &spec])
        .status()
        .context("apt-get download")?;
    if !status.success() {
        // The ABI is in the package's name: a newer kernel of the series is another package.
        let pattern = format!(
            "^linux-image-{}[.-].*amd64-unsigned$",
            kernel.label.replace('.', "\\.")
        );
        let available = apt_base("apt-cache", &apt)
            .args(["search", "--names-only", &pattern])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        bail!(
            "cannot download the pinned {spec} from {} (replaced in the archive?). The \
             archive has now:\n{available}Update the pin (package, version, sha256, release) in \
             xtask/src/vm/kernels.rs; `apt-cache madison PACKAGE` with the options of \
             kernels::apt_base gives the version.",
            kernel.suite
        );
    }
    Ok(())
}

/// The uncompressed ELF vmlinux of a bzImage, cached beside it. QEMU boots an ELF kernel through
/// its PVH entry point (CONFIG_PVH=y in all three), which skips the firmware's real-mode setup
/// and the in-guest decompression: half of the boot's emulated CPU time.
pub fn vmlinux(tree: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let out = tree.join(format!("boot/vmlinux-{}", kernel.release));
    if out.exists() {
        return Ok(out);
    }
    let bz = std::fs::read(tree.join(format!("boot/vmlinuz-{}", kernel.release)))?;
    let payload = bzimage_payload(&bz).context("not a bzImage with a payload")?;
    let tool = if payload.starts_with(b"\xfd7zXZ\0") {
        ["xz", "-dc", "--single-stream"]
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        // zstd payloads end with the 4-byte size the kernel's build appends, which zstd reads
        // as a bad frame after writing the whole kernel: the ELF check below decides.
        ["zstd", "-dc", "-q"]
    } else {
        bail!("the kernel's payload is compressed in a way this does not know");
    };
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", tool[0]))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = payload.to_vec();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let result = child.wait_with_output()?;
    // The decompressor may stop reading before the trailing size: a broken pipe is fine.
    let _ = feeder.join();
    if !complete_elf(&result.stdout) {
        bail!(
            "{} did not give a whole ELF kernel: {}",
            tool[0],
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    let tmp = out.with_extension("part");
    std::fs::write(&tmp, &result.stdout)?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// The compressed kernel inside a bzImage (boot protocol ≥ 2.08: payload_offset at 0x248 and
/// payload_length at 0x24c, counted from the protected-mode code after the setup sectors).
fn bzimage_payload(bz: &[u8]) -> Option<&[u8]> {
    if bz.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bz.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let setup_sects = match *bz.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    bz.get(start..start + u32_at(0x24c)?)
}

/// A 64-bit ELF whose section header table lies inside the bytes: nothing was cut off.
fn complete_elf(b: &[u8]) -> bool {
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
    };
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes(s.try_into().unwrap_or_default()))
    };
    if !b.starts_with(b"\x7fELF\x02") {
        return false;
    }
    match (u64_at(0x28), u16_at(0x3a), u16_at(0x3c)) {
        (Some(shoff), Some(shentsize), Some(shnum)) => {
            shoff + u64::from(shentsize) * u64::from(shnum) <= b.len() as u64
        }
        _ => false,
    }
}
