//! The workloads the guest runs under `scalp-bpf run -- …`: each makes exactly the calls and the
//! I/O its arguments say, checks every return value, and exits nonzero at the first surprise, so
//! that the checks on the host can compare scalp-bpf's tables with numbers known in advance.
//!
//! They print nothing while they work: a `write` to stdout would be one more call in the counts.
//! The xtask binary itself is copied into the guest and runs them (`xtask vm-workload …`), which
//! avoids shipping a second program and a second build.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct WorkloadArgs {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Subcommand)]
enum Kind {
    /// `count` getppid, `count` one-byte writes to /dev/null and `count` failing legacy `open`s
    /// (glibc opens with openat, so nothing else in the process calls `open`), then exit `exit`.
    Syscalls {
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 0)]
        exit: u8,
    },
    /// `writes` writes of `size` bytes to a new file at `path`, an fsync after every
    /// `fsync_every` writes.
    Fileio {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        writes: u32,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        fsync_every: u32,
    },
    /// O_DIRECT: `writes` then `reads` 4 KiB blocks of the block device `device`, at distinct
    /// aligned offsets, so that each is exactly one request.
    Direct {
        #[arg(long)]
        device: PathBuf,
        #[arg(long)]
        writes: u32,
        #[arg(long)]
        reads: u32,
    },
    /// `requests` HTTP/1.1 GETs (`/items/<i>`) over one keep-alive connection on 127.0.0.1:`port`,
    /// client and server both in this process (two threads); each answer is a 200 with a
    /// two-byte body and a Content-Length. The client closes, then the server.
    Http {
        #[arg(long)]
        requests: u32,
        #[arg(long)]
        port: u16,
    },
    /// Buffered writes of `bytes` to a new file, no fsync; then creates `written` and waits for
    /// `synced` to appear (someone else's sync makes the flusher threads write the pages back
    /// while this process is still traced).
    Buffered {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        bytes: usize,
        #[arg(long)]
        written: PathBuf,
        #[arg(long)]
        synced: PathBuf,
    },
}

const BLOCK: usize = 4096;

pub fn run(args: WorkloadArgs) -> Result<()> {
    match args.kind {
        Kind::Syscalls { count, exit } => {
            syscalls(count)?;
            std::process::exit(i32::from(exit))
        }
        Kind::Fileio {
            path,
            writes,
            size,
            fsync_every,
        } => fileio(&path, writes, size, fsync_every),
        Kind::Direct {
            device,
            writes,
            reads,
        } => direct(&device, writes, reads),
        Kind::Buffered {
            path,
            bytes,
            written,
            synced,
        } => buffered(&path, bytes, &written, &synced),
        Kind::Http { requests, port } => http(requests, port),
    }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn open(path: &Path, flags: i32) -> Result<i32> {
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        bail!(
            "open {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(fd)
}

fn syscalls(count: u32) -> Result<()> {
    let null = open(Path::new("/dev/null"), libc::O_WRONLY)?;
    let missing = c"/nonexistent/scalp-vm-workload";
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    for _ in 1..count {
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            bail!("getppid changed");
        }
    }
    for _ in 0..count {
        // SAFETY: the buffer is one valid byte.
        if unsafe { libc::write(null, b"x".as_ptr().cast(), 1) } != 1 {
            bail!("write to /dev/null: {}", std::io::Error::last_os_error());
        }
    }
    for _ in 0..count {
        // SAFETY: `missing` is a valid NUL-terminated path; the legacy open takes (path, flags).
        let r = unsafe { libc::syscall(libc::SYS_open, missing.as_ptr(), libc::O_RDONLY) };
        if r != -1 || errno() != libc::ENOENT {
            bail!("open of a missing path returned {r} (errno {})", errno());
        }
    }
    Ok(())
}

fn write_all_once(fd: i32, buf: &[u8]) -> Result<()> {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if usize::try_from(n).ok() != Some(buf.len()) {
        bail!(
            "write of {} bytes returned {n}: {}",
            buf.len(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn fsync(fd: i32) -> Result<()> {
    // SAFETY: fsync takes any descriptor.
    if unsafe { libc::fsync(fd) } != 0 {
        bail!("fsync: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn fileio(path: &Path, writes: u32, size: usize, fsync_every: u32) -> Result<()> {
    let fd = open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
    let buf = vec![0x5a_u8; size];
    for i in 1..=writes {
        write_all_once(fd, &buf)?;
        if fsync_every > 0 && i % fsync_every == 0 {
            fsync(fd)?;
        }
    }
    Ok(())
}

/// A BLOCK-aligned buffer of BLOCK bytes, as O_DIRECT wants.
struct Aligned(*mut u8, std::alloc::Layout);

impl Aligned {
    fn new() -> Result<Self> {
        let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK)?;
        // SAFETY: the layout has a nonzero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            bail!("out of memory");
        }
        Ok(Self(p, layout))
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.0, self.1) };
    }
}

fn direct(device: &Path, writes: u32, reads: u32) -> Result<()> {
    let fd = open(device, libc::O_RDWR | libc::O_DIRECT)?;
    let buf = Aligned::new()?;
    let offset = |i: u32| -> i64 { i64::from(i) * BLOCK as i64 };
    for i in 0..writes {
        // SAFETY: buf holds BLOCK bytes.
        let n = unsafe { libc::pwrite(fd, buf.0.cast(), BLOCK, offset(i)) };
        if usize::try_from(n).ok() != Some(BLOCK) {
            bail!(
                "O_DIRECT pwrite returned {n}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    for i in 0..reads {
        // SAFETY: buf holds BLOCK writable bytes.
        let n = unsafe { libc::pread(fd, buf.0.cast(), BLOCK, offset(i)) };
        if usize::try_from(n).ok() != Some(BLOCK) {
            bail!(
                "O_DIRECT pread returned {n}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

fn buffered(path: &Path, bytes: usize, written: &Path, synced: &Path) -> Result<()> {
    let fd = open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
    let buf = vec![0xa5_u8; BLOCK * 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        write_all_once(fd, &buf[..n])?;
        left -= n;
    }
    std::fs::write(written, b"")?;
    for _ in 0..6000 {
        if synced.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{} never appeared", synced.display())
}

/// The answer to every request of the HTTP workload (tests/vm/vm_checks.py counts its bytes).
pub const HTTP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Request `i` of the HTTP workload.
pub fn http_request(i: u32) -> String {
    format!("GET /items/{i} HTTP/1.1\r\nHost: vm\r\n\r\n")
}

/// Reads from `s` until `buf` ends with `end` (a request's blank line, a response's body).
fn read_until(s: &mut std::net::TcpStream, buf: &mut Vec<u8>, end: &[u8]) -> Result<bool> {
    use std::io::Read as _;
    buf.clear();
    let mut chunk = [0u8; 512];
    while !buf.ends_with(end) {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(true)
}

fn http(requests: u32, port: u16) -> Result<()> {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    let server = std::thread::spawn(move || -> Result<u32> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = Vec::new();
        let mut served = 0;
        while read_until(&mut conn, &mut buf, b"\r\n\r\n")? {
            conn.write_all(HTTP_RESPONSE)?;
            served += 1;
        }
        Ok(served)
    });
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let mut buf = Vec::new();
    for i in 0..requests {
        client.write_all(http_request(i).as_bytes())?;
        if !read_until(&mut client, &mut buf, b"\r\n\r\nok")? || buf != HTTP_RESPONSE {
            bail!("request {i}: answer {:?}", String::from_utf8_lossy(&buf));
        }
    }
    drop(client);
    let served = server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    if served != requests {
        bail!("the server answered {served} requests of {requests}");
    }
    Ok(())
}
