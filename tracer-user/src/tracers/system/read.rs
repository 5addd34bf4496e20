//! One read of the machine's counters from /proc, with the `procfs` crate: /proc/stat,
//! /proc/loadavg, /proc/meminfo, /proc/diskstats, /proc/net/dev and /proc/net/snmp. Each source
//! is read on its own; one that cannot be read is `None` in this reading and named in `failed`.

use std::collections::BTreeMap;

use procfs::{Current, DiskStat, KernelStats, LoadAverage, Meminfo, ProcError, prelude::*};

/// CPU modes in the order of every CPU column: user, nice, system, irq, softirq, iowait,
/// steal, idle.
pub const CPU_MODES: usize = 8;

/// Disk counters: reads, writes, sectors read, sectors written, discards, flushes, busy ms.
pub const DISK_COUNTERS: usize = 7;

/// Interface counters: rx bytes, packets, errors, drops; tx the same.
pub const NET_COUNTERS: usize = 8;

/// /proc/stat.
pub struct Stat {
    /// Every CPU's times added up, in USER_HZ ticks.
    pub total: [u64; CPU_MODES],
    /// Per online CPU (by number), in ticks.
    pub cpus: BTreeMap<u32, [u64; CPU_MODES]>,
    pub context_switches: u64,
    pub forks: u64,
    pub procs_running: Option<u32>,
    pub procs_blocked: Option<u32>,
}

/// /proc/meminfo, in bytes.
pub struct Memory {
    pub total: u64,
    pub used: u64,
    pub available: u64,
    pub page_cache: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub swap_used: u64,
}

/// One block device of /proc/diskstats.
pub struct Disk {
    /// Counters in [`DISK_COUNTERS`] order (discards and flushes 0 where the kernel has none).
    pub counters: [u64; DISK_COUNTERS],
    /// Whether the kernel reports discards (4.18+) and flushes (5.5+).
    pub has_discards: bool,
    pub has_flushes: bool,
    pub in_flight: u64,
}

/// /proc/net/snmp's TCP segment counters.
pub struct Tcp {
    pub out_segments: u64,
    pub retransmitted_segments: u64,
}

/// Everything read at one instant.
#[derive(Default)]
pub struct Reading {
    pub stat: Option<Stat>,
    pub load: Option<LoadAverage>,
    pub memory: Option<Memory>,
    pub disks: Option<BTreeMap<String, Disk>>,
    pub net: Option<BTreeMap<String, [u64; NET_COUNTERS]>>,
    pub tcp: Option<Tcp>,
    /// Sources that could not be read, with why.
    pub failed: Vec<(&'static str, ProcError)>,
}

impl Reading {
    pub fn now() -> Reading {
        let mut r = Reading::default();
        r.stat = r.source("/proc/stat", stat);
        r.load = r.source("/proc/loadavg", LoadAverage::current);
        r.memory = r.source("/proc/meminfo", memory);
        r.disks = r.source("/proc/diskstats", disks);
        r.net = r.source("/proc/net/dev", net);
        r.tcp = r.source("/proc/net/snmp", tcp);
        r
    }

    fn source<T>(&mut self, name: &'static str, read: fn() -> Result<T, ProcError>) -> Option<T> {
        read().map_err(|e| self.failed.push((name, e))).ok()
    }
}

fn stat() -> Result<Stat, ProcError> {
    // Read once and parsed by procfs; the CPU numbers come from the same text, since procfs
    // keeps the per-CPU lines in order but not their numbers, and an offline CPU has no line.
    let text = std::fs::read_to_string("/proc/stat")?;
    let stats = KernelStats::from_buf_read(text.as_bytes(), procfs::current_system_info())?;
    let numbers = text.lines().filter_map(|l| {
        let first = l.split_whitespace().next()?;
        first.strip_prefix("cpu")?.parse::<u32>().ok()
    });
    let modes = |t: &procfs::CpuTime| {
        [
            t.user,
            t.nice,
            t.system,
            t.irq.unwrap_or(0),
            t.softirq.unwrap_or(0),
            t.iowait.unwrap_or(0),
            t.steal.unwrap_or(0),
            t.idle,
        ]
    };
    Ok(Stat {
        total: modes(&stats.total),
        cpus: numbers.zip(stats.cpu_time.iter().map(modes)).collect(),
        context_switches: stats.ctxt,
        forks: stats.processes,
        procs_running: stats.procs_running,
        procs_blocked: stats.procs_blocked,
    })
}

fn memory() -> Result<Memory, ProcError> {
    let m = Meminfo::current()?;
    // MemAvailable is the kernel's estimate (3.14+); before it, free + buffers + page cache.
    let available = m.mem_available.unwrap_or(m.mem_free + m.buffers + m.cached);
    Ok(Memory {
        total: m.mem_total,
        used: m.mem_total.saturating_sub(available),
        available,
        page_cache: m.cached,
        dirty: m.dirty,
        writeback: m.writeback,
        swap_used: m.swap_total.saturating_sub(m.swap_free),
    })
}

fn disks() -> Result<BTreeMap<String, Disk>, ProcError> {
    Ok(procfs::diskstats()?
        .into_iter()
        .map(|d: DiskStat| {
            let disk = Disk {
                counters: [
                    d.reads,
                    d.writes,
                    d.sectors_read,
                    d.sectors_written,
                    d.discards.unwrap_or(0),
                    d.flushes.unwrap_or(0),
                    d.time_in_progress,
                ],
                has_discards: d.discards.is_some(),
                has_flushes: d.flushes.is_some(),
                in_flight: d.in_progress,
            };
            (d.name, disk)
        })
        .collect())
}

fn net() -> Result<BTreeMap<String, [u64; NET_COUNTERS]>, ProcError> {
    Ok(procfs::net::dev_status()?
        .into_iter()
        .map(|(name, d)| {
            let counters = [
                d.recv_bytes,
                d.recv_packets,
                d.recv_errs,
                d.recv_drop,
                d.sent_bytes,
                d.sent_packets,
                d.sent_errs,
                d.sent_drop,
            ];
            (name, counters)
        })
        .collect())
}

fn tcp() -> Result<Tcp, ProcError> {
    let snmp = procfs::net::snmp()?;
    Ok(Tcp {
        out_segments: snmp.tcp_out_segs,
        retransmitted_segments: snmp.tcp_retrans_segs,
    })
}

/// Whether block device `name` is a partition (sysfs spells a '/' in a name as '!').
pub fn is_partition(name: &str) -> bool {
    std::path::Path::new("/sys/class/block")
        .join(name.replace('/', "!"))
        .join("partition")
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_source_of_this_machine() {
        let r = Reading::now();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        let stat = r.stat.expect("/proc/stat");
        assert!(!stat.cpus.is_empty());
        // The total line is the sum of the CPU lines, mode by mode, to within the rounding of
        // each line's ns to ticks (a tick per CPU).
        let slack = stat.cpus.len() as u64 + 1;
        for mode in 0..CPU_MODES {
            let sum: u64 = stat.cpus.values().map(|c| c[mode]).sum();
            assert!(stat.total[mode].abs_diff(sum) <= slack, "mode {mode}");
        }
        assert!(stat.forks > 0 && stat.context_switches > 0);
        let m = r.memory.expect("/proc/meminfo");
        assert!(m.total > 0 && m.used + m.available == m.total);
        assert!(r.net.expect("/proc/net/dev").contains_key("lo"));
        assert!(r.disks.is_some() && r.load.is_some() && r.tcp.is_some());
    }
}
