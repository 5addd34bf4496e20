//! The guest's whole userspace, as an initramfs (a `newc` cpio archive the kernel unpacks into
//! its root tmpfs): Debian's static busybox, the guest init script (tests/vm/guest-init.sh), the
//! scalp-bpf binary under test and the xtask binary (the workloads) with the shared libraries
//! `ldd` names for them, and the kernel's own modules for the virtio disks and ext4, in
//! dependency order, decompressed on the host (busybox's insmod takes plain .ko files).

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The modules the guest loads; each with the modules it depends on. crc32c for ext4's
/// metadata checksums: the kernel would ask a modprobe the guest does not have.
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

/// A cpio archive being assembled: path in the guest → entry. Parent directories are added
/// for every entry, so the unpacking kernel always finds them first.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
}

impl Initramfs {
    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            at += i + 1;
            self.entries.insert(path[..at].to_owned(), Entry::Dir);
        }
    }

    pub fn dir(&mut self, path: &str) {
        self.parents(path);
        self.entries.insert(path.to_owned(), Entry::Dir);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::File { data, mode });
    }

    /// Copies a host file (symlinks followed) to `guest`.
    pub fn copy(&mut self, host: &Path, guest: &str, mode: u32) -> Result<()> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, data, mode);
        Ok(())
    }

    /// A dynamically linked host program at `guest`, with its loader and libraries at the paths
    /// the loader looks for them.
    pub fn program(&mut self, host: &Path, guest: &str) -> Result<()> {
        self.copy(host, guest, 0o755)?;
        for lib in shared_libraries(host)? {
            let at = lib.to_str().context("a library path that is not UTF-8")?;
            self.copy(&lib, at, 0o755)?;
        }
        Ok(())
    }

    /// The archive in the `newc` format (the kernel's initramfs format).
    pub fn write(&self, out: &Path) -> Result<()> {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        );
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let (mode, data): (u32, &[u8]) = match entry {
                Entry::Dir => (0o040_755, &[]),
                Entry::File { data, mode } => (0o100_000 | mode, data),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            header(&mut w, ino as u32 + 1, mode, nlink, data.len(), name)?;
            w.write_all(data)?;
            pad(&mut w, data.len())?;
        }
        header(&mut w, 0, 0, 1, 0, "TRAILER!!!")?;
        w.flush()?;
        Ok(())
    }
}

fn header(
    w: &mut impl std::io::Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    name: &str,
) -> Result<()> {
    let size = u32::try_from(size).context("a file over 4 GiB in the initramfs")?;
    let namesize = name.len() as u32 + 1;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize, check
    write!(w, "070701")?;
    for v in [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0] {
        write!(w, "{v:08x}")?;
    }
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, 110 + namesize as usize)
}

fn pad(w: &mut impl std::io::Write, len: usize) -> Result<()> {
    let n = (4 - len % 4) % 4;
    w.write_all(&[0; 3][..n])?;
    Ok(())
}

/// The loader and libraries of a dynamically linked program, from `ldd`.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static program: ldd says so on stderr and fails.
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable") {
            return Ok(vec![]);
        }
        bail!(
            "ldd {} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = vec![];
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        } else if line.contains("not found") {
            bail!("ldd {}: {line}", program.display());
        }
    }
    Ok(libs)
}

/// Reads a module file, decompressing .ko.xz / .ko.zst.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    let Some(tool) = tool else {
        return Ok(std::fs::read(path)?);
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// The `depends=` field of a module's .modinfo section (NUL-separated key=value strings).
fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return vec![];
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn module_name(file: &str) -> String {
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// Adds MODULES and their dependencies, in load order, as /vm/modules/NN-name.ko. A module that
/// is not a file must be built in (modules.builtin), else the kernel cannot drive the VM.
pub fn add_modules(initramfs: &mut Initramfs, tree: &Path, release: &str) -> Result<Vec<String>> {
    let dir = tree.join("lib/modules").join(release);
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(f) = p.file_name().and_then(|f| f.to_str())
                && f.contains(".ko")
            {
                index.insert(module_name(f), p);
            }
        }
    }
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(module_name)
        .collect();
    let mut order: Vec<(String, Vec<u8>)> = vec![];
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        builtin: &[String],
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        let name = name.replace('-', "_");
        if order.iter().any(|(n, _)| *n == name) {
            return Ok(());
        }
        let Some(path) = index.get(&name) else {
            if builtin.contains(&name) {
                return Ok(());
            }
            bail!("module {name} is neither a file nor built in");
        };
        let bytes = module_bytes(path)?;
        for dep in depends(&bytes) {
            visit(&dep, index, builtin, order)?;
        }
        order.push((name, bytes));
        Ok(())
    }
    for m in MODULES {
        visit(m, &index, &builtin, &mut order)?;
    }
    let names = order.iter().map(|(n, _)| n.clone()).collect();
    for (i, (name, bytes)) in order.into_iter().enumerate() {
        initramfs.file(&format!("/vm/modules/{:02}-{name}.ko", i + 1), bytes, 0o644);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_depends_is_parsed() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=jbd2,mbcache,crc16\0retpoline=Y\0";
        assert_eq!(depends(ko), ["jbd2", "mbcache", "crc16"]);
        assert!(depends(b"\0depends=\0name=x\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
        assert_eq!(module_name("crc32c-intel.ko.xz"), "crc32c_intel");
    }

    #[test]
    fn cpio_entries_are_aligned_and_parents_come_first() {
        let mut i = Initramfs::default();
        i.file("/a/b/c", b"hello".to_vec(), 0o644);
        i.dir("/bin");
        let paths: Vec<&str> = i.entries.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/a", "/a/b", "/a/b/c", "/bin"]);
        let out = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        i.write(&out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("a/b/c\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
