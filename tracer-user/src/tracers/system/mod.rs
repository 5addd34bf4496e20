//! The machine beside the traced processes (the dstat view): CPU time by mode, load, memory,
//! context switches and forks, block devices, network interfaces and TCP retransmissions, read
//! from /proc at every interval's end with the other tracers' maps. Nothing in the kernel: it
//! has no programs and costs the traced processes nothing.
//!
//! Four tables rather than one long one: each has one row per interval and thing it describes
//! (the machine, a CPU, a device, an interface), every column means something on every row, and
//! a timeline is a plain `pivot` on the interval (see `tables`).

mod deltas;
mod read;
pub mod summary;
mod tables;

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::RecordBatch;
use aya::Ebpf;

use self::{
    deltas::{Appears, Kind, Series},
    read::{CPU_MODES, DISK_COUNTERS, NET_COUNTERS, Reading},
    tables::{DiskRow, SystemRow},
};
use super::{Build, DropCount, Interval, Registration, Table, Tracer, TracerError};
use crate::processes::{ProcessKey, Processes};

pub use tables::{
    CPU as CPU_TABLE, DISK as DISK_TABLE, MODES as CPU_MODE_NAMES, NET as NET_TABLE,
    SYSTEM as TABLE,
};

pub static REGISTRATION: Registration = Registration {
    name: "system",
    selectable: true,
    wanted: |s| s.asked_for("system"),
    probes: &[],
    tables: &[
        Table {
            name: tables::SYSTEM,
            schema: tables::system_schema,
            summary: None,
        },
        Table {
            name: tables::CPU,
            schema: tables::cpu_schema,
            summary: None,
        },
        Table {
            name: tables::DISK,
            schema: tables::disk_schema,
            summary: None,
        },
        Table {
            name: tables::NET,
            schema: tables::net_schema,
            summary: None,
        },
    ],
    metrics: &[],
    drops: None,
    setup: super::no_setup,
    hooks: super::no_hooks,
    build,
};

/// The drops table's name for a source that could not be read (its columns are null).
const UNREADABLE: &str = "source_unreadable";

fn build(_: &mut Ebpf, _: &Build<'_>) -> super::Built {
    Ok(Some(Box::new(SystemTracer::new(Reading::now()))))
}

const CPU_KINDS: [Kind; CPU_MODES] = [Kind::Signed; CPU_MODES];
/// Requests and sectors only grow; busy ms is printed as 32 bits.
const DISK_KINDS: [Kind; DISK_COUNTERS] = {
    let mut k = [Kind::Monotonic; DISK_COUNTERS];
    k[DISK_COUNTERS - 1] = Kind::Wraps32;
    k
};

pub struct SystemTracer {
    ns_per_tick: i64,
    /// All CPUs' times, and per CPU.
    total: Series<(), CPU_MODES>,
    cpus: Series<u32, CPU_MODES>,
    /// Context switches and forks.
    scheduler: Series<(), 2>,
    /// TCP out and retransmitted segments.
    tcp: Series<(), 2>,
    disks: Series<String, DISK_COUNTERS>,
    net: Series<String, NET_COUNTERS>,
    /// Read at the last snapshot.
    reading: Option<Reading>,
    /// Sources not read since the last `take_drops`.
    unreadable: u64,
    /// Sources whose failure was already said (once per run each).
    warned: BTreeSet<&'static str>,
}

impl SystemTracer {
    /// Starts from `baseline`, read when tracing starts: the first interval's deltas are from it.
    fn new(baseline: Reading) -> SystemTracer {
        let ticks = crate::kernel::clock_ticks_per_second();
        let mut t = SystemTracer {
            ns_per_tick: 1_000_000_000 / i64::try_from(ticks).unwrap_or(100),
            total: Series::new(CPU_KINDS, Appears::WithHistory),
            cpus: Series::new(CPU_KINDS, Appears::WithHistory),
            scheduler: Series::new([Kind::Monotonic; 2], Appears::WithHistory),
            tcp: Series::new([Kind::Monotonic; 2], Appears::WithHistory),
            disks: Series::new(DISK_KINDS, Appears::FromZero),
            net: Series::new([Kind::Monotonic; NET_COUNTERS], Appears::FromZero),
            reading: None,
            unreadable: 0,
            warned: BTreeSet::new(),
        };
        t.rows(baseline);
        t.unreadable = 0;
        t
    }

    /// The interval's rows from `reading`, advancing every series.
    fn rows(&mut self, reading: Reading) -> Rows {
        for (source, e) in &reading.failed {
            self.unreadable += 1;
            if self.warned.insert(source) {
                tracing::warn!("cannot read {source}: {e}; its columns are null until it reads");
            }
        }
        let mut row = SystemRow::default();
        let mut cpus = Vec::new();
        match reading.stat {
            Some(stat) => {
                let tick = self.ns_per_tick;
                let ns = |t: [i64; CPU_MODES]| t.map(|v| v.saturating_mul(tick));
                row.cpus = i32::try_from(stat.cpus.len()).ok();
                row.cpu_ns = one(&mut self.total, Some(stat.total)).map(ns);
                if let Some([ctxt, forks]) = one(
                    &mut self.scheduler,
                    Some([stat.context_switches, stat.forks]),
                ) {
                    row.context_switches = Some(ctxt);
                    row.forks = Some(forks);
                }
                row.procs_running = stat.procs_running.and_then(|n| i32::try_from(n).ok());
                row.procs_blocked = stat.procs_blocked.and_then(|n| i32::try_from(n).ok());
                cpus = self.cpus.advance(stat.cpus).unwrap_or_default();
                cpus.iter_mut().for_each(|(_, t)| *t = ns(*t));
            }
            None => {
                one(&mut self.total, None);
                one(&mut self.scheduler, None);
                self.cpus.forget();
            }
        }
        row.load = reading
            .load
            .map(|l| [f64::from(l.one), f64::from(l.five), f64::from(l.fifteen)]);
        row.memory = reading.memory.map(|m| {
            [
                m.total,
                m.used,
                m.available,
                m.page_cache,
                m.dirty,
                m.writeback,
                m.swap_used,
            ]
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        });
        row.tcp = one(
            &mut self.tcp,
            reading
                .tcp
                .map(|t| [t.out_segments, t.retransmitted_segments]),
        );
        let disks = match reading.disks {
            Some(now) => {
                let counters = now.iter().map(|(n, d)| (n.clone(), d.counters)).collect();
                let deltas = self.disks.advance(counters).unwrap_or_default();
                deltas
                    .into_iter()
                    .filter_map(|(device, deltas)| {
                        let d = now.get(&device)?;
                        // Devices that never did any I/O (unused loop and ram devices) would
                        // be rows of zeros every interval.
                        let used = d.counters[..6].iter().any(|&c| c > 0);
                        let moved = deltas.iter().any(|&c| c != 0);
                        (used || moved).then(|| DiskRow {
                            partition: read::is_partition(&device),
                            device,
                            deltas,
                            has_discards: d.has_discards,
                            has_flushes: d.has_flushes,
                            in_flight: i64::try_from(d.in_flight).unwrap_or(i64::MAX),
                        })
                    })
                    .collect()
            }
            None => {
                self.disks.forget();
                Vec::new()
            }
        };
        let net = match reading.net {
            Some(now) => self.net.advance(now).unwrap_or_default(),
            None => {
                self.net.forget();
                Vec::new()
            }
        };
        Rows {
            system: row,
            cpus,
            disks,
            net,
        }
    }
}

/// The delta of a single set of counters (`None` when unread, or read for the first time).
fn one<const N: usize>(series: &mut Series<(), N>, now: Option<[u64; N]>) -> Option<[i64; N]> {
    let Some(now) = now else {
        series.forget();
        return None;
    };
    let rows = series.advance(BTreeMap::from([((), now)]))?;
    rows.into_iter().next().map(|(_, d)| d)
}

/// One interval's rows of every system table.
struct Rows {
    system: SystemRow,
    cpus: Vec<(u32, [i64; CPU_MODES])>,
    disks: Vec<DiskRow>,
    net: Vec<(String, [i64; NET_COUNTERS])>,
}

impl Rows {
    fn batches(
        &self,
        interval: &Interval,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let mut out = vec![(TABLE, tables::system_batch(interval, &self.system)?)];
        if !self.cpus.is_empty() {
            out.push((CPU_TABLE, tables::cpu_batch(interval, &self.cpus)?));
        }
        if !self.disks.is_empty() {
            out.push((DISK_TABLE, tables::disk_batch(interval, &self.disks)?));
        }
        if !self.net.is_empty() {
            out.push((NET_TABLE, tables::net_batch(interval, &self.net)?));
        }
        Ok(out)
    }
}

impl Tracer for SystemTracer {
    /// The baseline again, now that loading and marking the targets are done: the first
    /// interval's deltas cover the interval itself.
    fn start(&mut self, _processes: &crate::processes::Processes) {
        let baseline = Reading::now();
        self.rows(baseline);
    }

    fn snapshot(&mut self, _: &Processes) -> Result<(), TracerError> {
        self.reading = Some(Reading::now());
        Ok(())
    }

    fn batches(
        &mut self,
        interval: &Interval,
        _: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let Some(reading) = self.reading.take() else {
            return Ok(Vec::new());
        };
        self.rows(reading).batches(interval)
    }

    fn reap(&mut self, _: &[ProcessKey]) -> Result<(), TracerError> {
        Ok(())
    }

    fn take_drops(&mut self) -> Vec<DropCount> {
        let n = std::mem::take(&mut self.unreadable);
        if n == 0 {
            return Vec::new();
        }
        vec![("system", UNREADABLE, n)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use read::{Disk, Stat};

    fn stat(user: u64, cpu1_user: u64, ctxt: u64) -> Stat {
        let mut cpus = BTreeMap::new();
        cpus.insert(0, [user - cpu1_user, 0, 0, 0, 0, 0, 0, 100]);
        cpus.insert(1, [cpu1_user, 0, 0, 0, 0, 0, 0, 100]);
        Stat {
            total: [user, 0, 0, 0, 0, 0, 0, 200],
            cpus,
            context_switches: ctxt,
            forks: 10,
            procs_running: Some(2),
            procs_blocked: Some(0),
        }
    }

    fn disk(writes: u64) -> Disk {
        Disk {
            counters: [0, writes, 0, writes * 8, 0, 0, 0],
            has_discards: true,
            has_flushes: false,
            in_flight: 0,
        }
    }

    #[test]
    fn rows_are_deltas_in_ns_and_bytes() {
        let mut t = SystemTracer::new(Reading {
            stat: Some(stat(100, 40, 1_000)),
            disks: Some(BTreeMap::from([("vda".to_owned(), disk(5))])),
            ..Reading::default()
        });
        let rows = t.rows(Reading {
            stat: Some(stat(150, 90, 1_300)),
            disks: Some(BTreeMap::from([
                ("vda".to_owned(), disk(9)),
                ("loop7".to_owned(), disk(0)),
            ])),
            ..Reading::default()
        });
        let tick = t.ns_per_tick;
        assert_eq!(rows.system.cpu_ns.map(|c| c[0]), Some(50 * tick));
        assert_eq!(rows.system.context_switches, Some(300));
        assert_eq!(rows.system.forks, Some(0));
        assert_eq!(rows.system.cpus, Some(2));
        assert_eq!(
            rows.cpus,
            vec![(0, [0; 8]), (1, [50 * tick, 0, 0, 0, 0, 0, 0, 0])]
        );
        // loop7 never did anything: no row.
        assert_eq!(rows.disks.len(), 1);
        assert_eq!((rows.disks[0].deltas[1], rows.disks[0].deltas[3]), (4, 32));
        let batches = rows.batches(&Interval {
            start_unix_ns: 0,
            end_unix_ns: 1_000_000_000,
        });
        let names: Vec<&str> = batches.unwrap().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [TABLE, CPU_TABLE, DISK_TABLE]);
    }

    #[test]
    fn an_unreadable_source_is_null_counted_and_rebaselined() {
        let mut t = SystemTracer::new(Reading {
            stat: Some(stat(100, 40, 1_000)),
            ..Reading::default()
        });
        let unreadable = Reading {
            failed: vec![("/proc/stat", std::io::Error::other("gone").into())],
            ..Reading::default()
        };
        let rows = t.rows(unreadable);
        assert_eq!(rows.system.cpu_ns, None);
        assert!(rows.cpus.is_empty());
        assert_eq!(t.take_drops(), vec![("system", UNREADABLE, 1)]);
        assert_eq!(t.take_drops(), vec![]);
        // Readable again: a new baseline (no delta across the gap), then deltas.
        let rows = t.rows(Reading {
            stat: Some(stat(500, 40, 2_000)),
            ..Reading::default()
        });
        assert_eq!(rows.system.context_switches, None);
        let rows = t.rows(Reading {
            stat: Some(stat(510, 40, 2_007)),
            ..Reading::default()
        });
        assert_eq!(rows.system.context_switches, Some(7));
    }
}
