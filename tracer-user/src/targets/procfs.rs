//! Reading processes from /proc.

use std::{fs, io, path::Path};

/// What /proc says about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// `/proc/PID/comm` (at most 15 bytes).
    pub comm: String,
    /// `/proc/PID/cmdline`, split at NULs (empty for kernel threads and zombies).
    pub argv: Vec<String>,
    /// Start time, clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// Exited, waiting to be reaped: it makes no more syscalls (see [`is_dead`]).
    pub dead: bool,
}

impl ProcInfo {
    /// The command line as one string, arguments separated by spaces.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }
}

/// Every PID in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// Reads one process; `NotFound` when it is gone.
pub fn read(pid: u32) -> io::Result<ProcInfo> {
    let pid_t = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
    // /proc/PID/stat through procfs (its comm may hold spaces and parentheses: procfs counts
    // the fields from the last ')').
    let stat = ::procfs::process::Process::new(pid_t)
        .and_then(|p| p.stat())
        .map_err(io_error)?;
    // The command line by hand: procfs's `cmdline()` fails on an argument that is not UTF-8 and
    // drops empty ones, and a name is matched against argv[0] and the script's position.
    let argv = fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
        .map(|raw| split_cmdline(&raw))
        .unwrap_or_default();
    Ok(ProcInfo {
        pid,
        ppid: u32::try_from(stat.ppid).unwrap_or(0),
        comm: stat.comm,
        argv,
        start_ticks: stat.starttime,
        dead: is_dead(stat.state, stat.num_threads),
    })
}

/// Whether a process has ended, from its `/proc/PID/stat` state and thread count. A main thread
/// that ended before the others shows as a zombie (Z) while they live on: the process has ended
/// only when it is the last one left.
fn is_dead(state: char, threads: i64) -> bool {
    matches!(state, 'Z' | 'X' | 'x') && threads <= 1
}

/// procfs's error as the `io::Error` callers tell a gone process by (`NotFound`).
fn io_error(e: ::procfs::ProcError) -> io::Error {
    match e {
        ::procfs::ProcError::NotFound(_) => io::ErrorKind::NotFound.into(),
        ::procfs::ProcError::Io(e, _) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Every descendant of `root` among `procs` (children, grandchildren, …).
pub fn descendants(root: u32, procs: &[ProcInfo]) -> Vec<u32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            procs
                .iter()
                .filter(|p| p.ppid == parent && p.pid != parent)
                .map(|p| p.pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_comms() {
        use ::procfs::FromRead as _;
        let line = "42 (a b) c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 \
                    0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let stat = ::procfs::process::Stat::from_read(line.as_bytes()).expect("parses");
        assert_eq!((stat.state, stat.ppid, stat.starttime), ('S', 7, 123456));
        assert_eq!(stat.comm, "a b) c)");
    }

    #[test]
    fn a_zombie_main_thread_with_live_threads_is_not_dead() {
        assert!(is_dead('Z', 1));
        assert!(is_dead('X', 1));
        assert!(!is_dead('Z', 2));
        assert!(!is_dead('S', 1));
        assert!(!is_dead('R', 3));
    }

    #[test]
    fn a_gone_process_is_not_found() {
        // PIDs never exceed pid_max (at most 2^22).
        let e = read(1 << 30).expect_err("no such process");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn cmdline_splits_at_nuls() {
        assert_eq!(
            split_cmdline(b"python3\0/usr/bin/nova-api\0--config-file\0x\0"),
            ["python3", "/usr/bin/nova-api", "--config-file", "x"]
        );
        assert!(split_cmdline(b"").is_empty());
        // setproctitle rewrites the whole command line into argv[0].
        assert_eq!(
            split_cmdline(b"nova-api: master process\0"),
            ["nova-api: master process"]
        );
    }

    #[test]
    fn descendants_cover_every_generation() {
        let p = |pid, ppid| ProcInfo {
            pid,
            ppid,
            ..Default::default()
        };
        let procs = [p(10, 1), p(11, 10), p(12, 11), p(13, 1), p(14, 10)];
        let mut d = descendants(10, &procs);
        d.sort();
        assert_eq!(d, [11, 12, 14]);
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).expect("/proc/self");
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_ticks > 0);
        assert!(!me.argv.is_empty());
    }
}
