//! What `top` knows: every interval's rows folded, per process and key, into totals since top
//! started and the last interval's counts (for rates). Tables are read through their `summary`
//! spec (keys, counters, histogram), so a tracer's table needs no code here to be shown.

use std::collections::{BTreeMap, HashMap};

use arrow_array::RecordBatch;

use super::machine::{Machine, is_system_table};
use crate::{
    analysis::{
        aggregate::Agg,
        load::{ints, lists, strings},
    },
    run::Collected,
    targets::TracedReason,
    tracers::{
        drops,
        views::{TableSpec, table_spec},
    },
};

/// A process as the rows name it: its PID and start time (a reused PID is another process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId {
    pub pid: u32,
    /// µs since the epoch, as the tables write it.
    pub start_us: Option<i64>,
}

/// Ended processes listed one by one at most; older ones are folded into one row per service
/// (their totals stay exact), so that a service forking thousands of short-lived children does
/// not grow top without bound.
const ENDED_LISTED: usize = 200;

/// A traced process, as top shows it.
#[derive(Clone, Debug)]
pub struct Proc {
    pub name: String,
    /// The service it belongs to: the target it was traced as, with its workers and children.
    pub service: String,
    pub alive: bool,
    /// The interval it was first seen ended in.
    pub ended_seq: Option<u64>,
}

/// One (process, key) of a table: its totals since top started and its last interval.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub total: Agg,
    pub last: Agg,
    /// The interval `last` is of ([`Model::seq`]); older means nothing happened since.
    pub seq: u64,
}

/// A table's entries.
pub type Table = HashMap<(ProcId, Vec<String>), Entry>;

/// Drops of one (tracer, reason).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEntry {
    pub total: i64,
    pub last: i64,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Intervals seen.
    pub seq: u64,
    /// The last interval's length, seconds.
    pub interval_secs: f64,
    /// Seconds of tracing so far.
    pub elapsed_secs: f64,
    pub procs: BTreeMap<ProcId, Proc>,
    pub tables: BTreeMap<&'static str, Table>,
    pub drops: BTreeMap<(String, String), DropEntry>,
    /// Parent PID and why traced, of every process seen live (to find its service).
    lineage: HashMap<u32, (u32, TracedReason, String)>,
    /// Per service, the row its folded ended processes add up in.
    folded: HashMap<String, ProcId>,
    /// The machine in the last interval, when the system tables are on.
    pub machine: Option<Machine>,
}

impl Model {
    /// Folds one collected interval in.
    pub fn ingest(&mut self, c: &Collected<'_>) {
        self.seq += 1;
        let secs = (c.interval.end_unix_ns - c.interval.start_unix_ns) as f64 / 1e9;
        self.interval_secs = secs.max(1e-3);
        self.elapsed_secs += secs.max(0.0);
        for r in c.processes.live().chain(c.ended) {
            self.lineage
                .entry(r.pid())
                .or_insert_with(|| (r.parent_pid, r.reason.clone(), r.name.clone()));
        }
        for e in self.drops.values_mut() {
            e.last = 0;
        }
        for (table, batch) in c.batches {
            if *table == drops::TABLE {
                self.ingest_drops(batch);
            } else if is_system_table(table) {
                let secs = self.interval_secs;
                self.machine
                    .get_or_insert_with(Machine::default)
                    .ingest(table, batch, secs);
            } else if let Some(spec) = table_spec(table) {
                self.ingest_table(spec, batch);
            }
        }
        // Processes that did nothing yet are shown too.
        for r in c.processes.live() {
            let id = ProcId {
                pid: r.pid(),
                start_us: r.start_unix_ns.map(|ns| ns / 1000),
            };
            if !self.procs.contains_key(&id) {
                let service = self.service_of(id.pid, &r.name);
                let name = r.name.clone();
                self.procs.insert(
                    id,
                    Proc {
                        name,
                        service,
                        alive: true,
                        ended_seq: None,
                    },
                );
            }
        }
        for (id, p) in self.procs.iter_mut() {
            if self.folded.get(&p.service) == Some(id) {
                continue;
            }
            p.alive = c.processes.is_live(id.pid);
            if !p.alive && p.ended_seq.is_none() {
                p.ended_seq = Some(self.seq);
            }
        }
        self.fold_ended();
        // Ended processes' services are known by now; their PIDs may be reused.
        for r in c.ended {
            self.lineage.remove(&r.pid());
        }
    }

    /// The service of a process: the target it descends from (a name target names it; a PID
    /// target is named after its process), as `summary` groups.
    fn service_of(&self, pid: u32, name: &str) -> String {
        let mut at = pid;
        for _ in 0..64 {
            let Some((ppid, reason, pname)) = self.lineage.get(&at) else {
                break;
            };
            match reason {
                TracedReason::Target(spec) if spec.bytes().all(|b| b.is_ascii_digit()) => {
                    return pname.clone();
                }
                TracedReason::Target(spec) => return spec.clone(),
                TracedReason::Command => return pname.clone(),
                _ if *ppid == at || !self.lineage.contains_key(ppid) => return pname.clone(),
                _ => at = *ppid,
            }
        }
        name.to_owned()
    }

    fn ingest_table(&mut self, spec: &'static TableSpec, batch: &RecordBatch) {
        let (Some(pid), Some(start), Some(name)) = (
            ints(batch, "process_pid"),
            ints(batch, "process_start_time"),
            strings(batch, "process_name"),
        ) else {
            return;
        };
        let keys: Option<Vec<Vec<String>>> = spec.keys.iter().map(|k| strings(batch, k)).collect();
        let counters: Option<Vec<Vec<Option<i64>>>> =
            spec.counters.iter().map(|c| ints(batch, c)).collect();
        let (Some(keys), Some(counters)) = (keys, counters) else {
            return;
        };
        let hist = spec.histogram.and_then(|h| lists(batch, h));
        let seq = self.seq;
        for i in 0..batch.num_rows() {
            let id = ProcId {
                pid: pid[i].map_or(0, |p| p as u32),
                start_us: start[i],
            };
            if !self.procs.contains_key(&id) {
                let service = self.service_of(id.pid, &name[i]);
                self.procs.insert(
                    id,
                    Proc {
                        name: name[i].clone(),
                        service,
                        alive: true,
                        ended_seq: None,
                    },
                );
            }
            let key: Vec<String> = keys.iter().map(|k| k[i].clone()).collect();
            let values: Vec<i64> = counters.iter().map(|c| c[i].unwrap_or(0)).collect();
            let h = hist.as_ref().map(|h| h[i].as_slice());
            let table = self.tables.entry(spec.table).or_default();
            let e = table.entry((id, key)).or_default();
            if e.seq != seq {
                e.last = Agg::default();
                e.seq = seq;
            }
            let row = Agg {
                counters: values,
                hist: h.map(<[i64]>::to_vec).unwrap_or_default(),
            };
            merge(&mut e.last, &row);
            merge(&mut e.total, &row);
        }
    }

    /// Beyond [`ENDED_LISTED`] ended processes, folds the oldest (down to half, so that this
    /// runs rarely) into their service's "(ended)" row.
    fn fold_ended(&mut self) {
        let mut ended: Vec<(u64, ProcId)> = self
            .procs
            .iter()
            .filter_map(|(id, p)| Some((p.ended_seq?, *id)))
            .filter(|(_, id)| id.pid != 0)
            .collect();
        if ended.len() <= ENDED_LISTED {
            return;
        }
        ended.sort_unstable();
        let fold: HashMap<ProcId, ProcId> = ended[..ended.len() - ENDED_LISTED / 2]
            .iter()
            .filter_map(|(_, id)| {
                let service = self.procs.get(id)?.service.clone();
                let n = self.folded.len() as i64;
                let into = *self.folded.entry(service.clone()).or_insert(ProcId {
                    pid: 0,
                    start_us: Some(-1 - n),
                });
                self.procs.entry(into).or_insert(Proc {
                    name: "(ended)".to_owned(),
                    service,
                    alive: false,
                    ended_seq: None,
                });
                Some((*id, into))
            })
            .collect();
        let seq = self.seq;
        for table in self.tables.values_mut() {
            let moved: Vec<(ProcId, Vec<String>)> = table
                .keys()
                .filter(|(id, _)| fold.contains_key(id))
                .cloned()
                .collect();
            for (id, key) in moved {
                let Some(e) = table.remove(&(id, key.clone())) else {
                    continue;
                };
                let into = table.entry((fold[&id], key)).or_default();
                if into.seq != seq {
                    into.last = Agg::default();
                }
                if e.seq == seq {
                    merge(&mut into.last, &e.last);
                    into.seq = seq;
                }
                merge(&mut into.total, &e.total);
            }
        }
        for id in fold.keys() {
            self.procs.remove(id);
        }
    }

    fn ingest_drops(&mut self, batch: &RecordBatch) {
        let (Some(tracer), Some(reason), Some(count)) = (
            strings(batch, "tracer"),
            strings(batch, "reason"),
            ints(batch, "count"),
        ) else {
            return;
        };
        for i in 0..batch.num_rows() {
            let n = count[i].unwrap_or(0);
            let e = self
                .drops
                .entry((tracer[i].clone(), reason[i].clone()))
                .or_default();
            e.total += n;
            e.last += n;
        }
    }

    /// Every drop since top started.
    pub fn drops_total(&self) -> i64 {
        self.drops.values().map(|d| d.total).sum()
    }

    /// Whether `t`'s last interval is the newest.
    pub fn is_current(&self, e: &Entry) -> bool {
        e.seq == self.seq
    }

    /// Sums of a table over the processes `keep` accepts, per key (`key_of` maps a row's key
    /// to the one shown: several rows may fold into one).
    pub fn by_key(
        &self,
        table: &str,
        keep: &dyn Fn(&ProcId) -> bool,
        key_of: &dyn Fn(&[String]) -> Option<String>,
    ) -> BTreeMap<String, Sums> {
        let mut out: BTreeMap<String, Sums> = BTreeMap::new();
        let Some(t) = self.tables.get(table) else {
            return out;
        };
        for ((id, key), e) in t {
            if !keep(id) {
                continue;
            }
            let Some(k) = key_of(key) else { continue };
            out.entry(k).or_default().add(e, self.is_current(e));
        }
        out
    }

    /// Sums of a table over the processes `keep` accepts and the rows `row` accepts.
    pub fn sum(
        &self,
        table: &str,
        keep: &dyn Fn(&ProcId) -> bool,
        row: &dyn Fn(&[String]) -> bool,
    ) -> Sums {
        let mut s = Sums::default();
        if let Some(t) = self.tables.get(table) {
            for ((id, key), e) in t {
                if keep(id) && row(key) {
                    s.add(e, self.is_current(e));
                }
            }
        }
        s
    }

    /// The index of `counter` in `table`'s sums.
    pub fn counter(&self, table: &str, counter: &str) -> Option<usize> {
        table_spec(table)?
            .counters
            .iter()
            .position(|c| *c == counter)
    }
}

/// Totals and last-interval sums of some rows of a table.
#[derive(Clone, Debug, Default)]
pub struct Sums {
    pub total: Agg,
    pub last: Agg,
}

impl Sums {
    fn add(&mut self, e: &Entry, current: bool) {
        merge(&mut self.total, &e.total);
        if current {
            merge(&mut self.last, &e.last);
        }
    }

    /// Counter `i` since top started.
    pub fn total(&self, i: Option<usize>) -> i64 {
        i.and_then(|i| self.total.counters.get(i).copied())
            .unwrap_or(0)
    }

    /// Counter `i` in the last interval.
    pub fn last(&self, i: Option<usize>) -> i64 {
        i.and_then(|i| self.last.counters.get(i).copied())
            .unwrap_or(0)
    }
}

/// Adds `b` into `a` (counters and histogram), growing `a` as needed.
fn merge(a: &mut Agg, b: &Agg) {
    if a.counters.len() < b.counters.len() {
        a.counters.resize(b.counters.len(), 0);
    }
    for (x, y) in a.counters.iter_mut().zip(&b.counters) {
        *x += y;
    }
    if a.hist.len() < b.hist.len() {
        a.hist.resize(b.hist.len(), 0);
    }
    for (x, y) in a.hist.iter_mut().zip(&b.hist) {
        *x += y;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, Int32Array, Int64Array, ListArray, StringArray, TimestampMicrosecondArray,
        types::Int64Type,
    };

    use super::*;
    use crate::{processes::Processes, tracers::Interval};

    /// A syscalls batch of (pid, syscall, calls, errors, histogram) rows; only the columns top
    /// reads.
    fn syscalls(rows: &[(i32, &str, i64, i64, Vec<i64>)]) -> RecordBatch {
        let col = |a: ArrayRef| a;
        RecordBatch::try_from_iter([
            (
                "process_pid",
                col(Arc::new(Int32Array::from_iter_values(
                    rows.iter().map(|r| r.0),
                ))),
            ),
            (
                "process_start_time",
                col(Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|_| 7),
                ))),
            ),
            (
                "process_name",
                col(Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|_| "worker"),
                ))),
            ),
            (
                "syscall_name",
                col(Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                ))),
            ),
            (
                "calls",
                col(Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.2),
                ))),
            ),
            (
                "errors",
                col(Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.3),
                ))),
            ),
            (
                "duration_ns_sum",
                col(Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|_| 0),
                ))),
            ),
            (
                "duration_histogram",
                col(Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                    rows.iter()
                        .map(|r| Some(r.4.iter().map(|v| Some(*v)).collect::<Vec<_>>())),
                ))),
            ),
        ])
        .expect("batch")
    }

    fn drops(count: i64) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "tracer",
                Arc::new(StringArray::from(vec!["sockets"])) as ArrayRef,
            ),
            (
                "reason",
                Arc::new(StringArray::from(vec!["event_ring_full"])) as ArrayRef,
            ),
            ("count", Arc::new(Int64Array::from(vec![count])) as ArrayRef),
        ])
        .expect("batch")
    }

    fn feed(m: &mut Model, seconds: i64, batches: &[(&'static str, RecordBatch)]) {
        let processes = Processes::new();
        let start = m.seq as i64 * seconds * 1_000_000_000;
        m.ingest(&Collected {
            interval: Interval {
                start_unix_ns: start,
                end_unix_ns: start + seconds * 1_000_000_000,
            },
            batches,
            processes: &processes,
            ended: &[],
        });
    }

    #[test]
    fn totals_add_up_and_rates_are_of_the_last_interval() {
        let mut m = Model::default();
        let mut hist = vec![0; 12];
        hist[11] = 100; // [1024, 2048) ns
        feed(
            &mut m,
            2,
            &[
                (
                    "syscalls",
                    syscalls(&[
                        (10, "getppid", 100, 0, hist.clone()),
                        (11, "openat", 4, 4, vec![]),
                    ]),
                ),
                (drops::TABLE, drops(3)),
            ],
        );
        feed(
            &mut m,
            2,
            &[(
                "syscalls",
                syscalls(&[(10, "getppid", 50, 0, vec![]), (10, "read", 1, 1, vec![])]),
            )],
        );
        let calls = m.counter("syscalls", "calls");
        let errors = m.counter("syscalls", "errors");
        let all = m.by_key("syscalls", &|_| true, &|k| k.first().cloned());
        assert_eq!(all["getppid"].total(calls), 150);
        assert_eq!(all["getppid"].last(calls), 50);
        // Nothing in the last interval: no rate, the total stays.
        assert_eq!(all["openat"].last(calls), 0);
        assert_eq!(all["openat"].total(errors), 4);
        assert_eq!(m.interval_secs, 2.0);
        assert_eq!(m.elapsed_secs, 4.0);
        // p99 from the totals' histogram (the summary's rule).
        assert_eq!(
            crate::analysis::percentile::quantile(&all["getppid"].total.hist, 0.99),
            Some(1024.0 + 1024.0 * 0.99)
        );
        // One process only.
        let only_10 = m.sum("syscalls", &|id| id.pid == 10, &|_| true);
        assert_eq!(only_10.total(calls), 151);
        assert_eq!(only_10.total(errors), 1);
        // Processes are named by their rows; without lineage, their service is their name.
        assert_eq!(m.procs.len(), 2);
        assert!(m.procs.values().all(|p| p.service == "worker"));
        // Drops: the total stays, the last interval's is 0 when nothing was dropped in it.
        assert_eq!(m.drops_total(), 3);
        assert_eq!(m.drops.values().map(|d| d.last).sum::<i64>(), 0);
    }

    #[test]
    fn ended_processes_fold_into_their_service_with_exact_totals() {
        let mut m = Model::default();
        // Nothing is live (an empty registry): all 250 processes ended in this interval.
        let rows: Vec<(i32, &str, i64, i64, Vec<i64>)> = (1..=250)
            .map(|pid| (pid, "getppid", 2, 0, vec![]))
            .collect();
        feed(&mut m, 1, &[("syscalls", syscalls(&rows))]);
        assert_eq!(m.procs.len(), ENDED_LISTED / 2 + 1);
        let folded: Vec<&Proc> = m.procs.values().filter(|p| p.name == "(ended)").collect();
        assert_eq!(folded.len(), 1);
        assert_eq!(folded[0].service, "worker");
        let calls = m.counter("syscalls", "calls");
        let all = m.sum("syscalls", &|_| true, &|_| true);
        assert_eq!((all.total(calls), all.last(calls)), (500, 500));
        // The most recent ones are still listed one by one.
        assert!(m.procs.keys().any(|id| id.pid == 250));
        assert!(!m.procs.keys().any(|id| id.pid == 1));
    }
}
