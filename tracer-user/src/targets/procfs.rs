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
    /// Exited, waiting to be reaped (state Z or X): it makes no more syscalls.
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
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat"))?;
    let (state, ppid, start_ticks) = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad /proc/{pid}/stat"))
    })?;
    let comm = fs::read_to_string(dir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default();
    let argv = fs::read(dir.join("cmdline"))
        .map(|raw| split_cmdline(&raw))
        .unwrap_or_default();
    Ok(ProcInfo {
        pid,
        ppid,
        comm,
        argv,
        start_ticks,
        dead: matches!(state, 'Z' | 'X' | 'x'),
    })
}

/// (state, ppid, starttime) from `/proc/PID/stat`. The comm field may hold spaces and
/// parentheses, so fields are counted from the last ')'.
pub fn parse_stat(stat: &str) -> Option<(char, u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state(3) ppid(4) … starttime(22) → indexes 0, 1, … 19.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
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
        let stat = "42 (a b) c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 7, 123456)));
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
