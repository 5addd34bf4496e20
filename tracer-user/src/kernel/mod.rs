//! Facts about the running kernel and our privileges, checked before anything is loaded, and
//! access to the loaded programs' maps.

pub mod btf;
pub mod maps;
pub mod privileges;
pub mod support;

use std::{fs, io, path::Path};

/// The kernel's pid_max (largest PID + 1).
pub fn pid_max() -> io::Result<u32> {
    let max = procfs::sys::kernel::pid_max().map_err(|e| match e {
        procfs::ProcError::Io(e, _) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    })?;
    u32::try_from(max).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> String {
    procfs::sys::kernel::random::boot_id()
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `uname -r` and `uname -v`.
pub fn release_and_version() -> (String, String) {
    let read = |p: &str| {
        fs::read_to_string(Path::new("/proc/sys/kernel").join(p))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    (read("osrelease"), read("version"))
}

/// The host name.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Clock ticks per second (`USER_HZ`), the unit of /proc/PID/stat times.
pub fn clock_ticks_per_second() -> u64 {
    procfs::ticks_per_second().max(1)
}

/// Reads a clock in ns.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock ids used are always available on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Converts `CLOCK_BOOTTIME` (and `CLOCK_MONOTONIC`-based kernel stamps) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clocks {
    /// `CLOCK_REALTIME - CLOCK_BOOTTIME`, ns.
    boot_to_real_ns: i128,
}

impl Clocks {
    pub fn now() -> Clocks {
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        let boot = clock_ns(libc::CLOCK_BOOTTIME) as i128;
        Clocks {
            boot_to_real_ns: real - boot,
        }
    }

    /// Wall-clock ns since the epoch of a `CLOCK_BOOTTIME` stamp.
    pub fn boot_to_unix_ns(&self, boot_ns: u64) -> i64 {
        (boot_ns as i128 + self.boot_to_real_ns) as i64
    }
}
