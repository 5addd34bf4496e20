//! The `syscalls` table: per interval, per process, per syscall: calls, errors, latency.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int32Builder, Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use tracer_common::{
    dispatch::SYSCALL_NRS,
    hist::BUCKETS,
    syscalls::{
        self as common, MAX_SAMPLE_SHIFT, SYSCALL_INFLIGHT, SYSCALL_SAMPLE_SHIFT, SYSCALL_SLOTS,
        SYSCALL_STATS, SyscallDrop, SyscallKey, SyscallStats, SyscallsConfig,
    },
};

use super::{
    Build, Interval, KernelDrops, Registration, Table, Tracer, TracerError,
    columns::{
        IntervalProcessColumns, LatencyColumns, batch, interval_process_fields, latency_fields,
    },
    views::{MIN_LATENCY_SAMPLES, Measure, Metric, TableSpec},
};
use crate::{
    kernel::{
        btf::BtfError,
        maps::{self, MapAccessError},
    },
    loader::KernelSetup,
    processes::{OfProcess, ProcessKey, Processes},
    settings::{LatencyMode, Settings},
    snapshot::{Counters, Op, StatsMap},
    syscall_names::Arch,
};

crate::processes::of_process!(SyscallKey);

pub const TABLE: &str = "syscalls";

/// Largest in-flight table: 2^16 slots (1 MiB). Smaller pid_max gets one slot per PID.
const MAX_INFLIGHT_SLOTS: u32 = 1 << 16;

pub static REGISTRATION: Registration = Registration {
    name: "syscalls",
    selectable: true,
    // The others build on it: it always runs.
    wanted: super::always,
    // sys_enter and sys_exit belong to the dispatch; this tracer's hooks run inside them.
    probes: &[],
    tables: &[Table {
        name: TABLE,
        schema,
        summary: Some(TableSpec {
            table: TABLE,
            title: "System calls",
            keys: &["syscall_name"],
            counters: &["calls", "errors", "duration_ns_sum"],
            histogram: Some("duration_histogram"),
            default_sort: "calls",
            rank: 0,
        }),
    }],
    metrics: &[
        Metric {
            id: "syscalls.calls",
            table: TABLE,
            title: "System calls",
            keys: &["syscall_name"],
            only: &[],
            except: &[("syscall_name", WAITS)],
            measure: Measure::Counter("calls"),
            threshold: 0.10,
            floor: 100.0,
            new_is_regression: false,
            rank: 3,
        },
        Metric {
            id: "syscalls.errors",
            table: TABLE,
            title: "Failed system calls",
            keys: &["syscall_name"],
            only: &[],
            except: &[("syscall_name", WAITS)],
            measure: Measure::Counter("errors"),
            threshold: 0.10,
            floor: 20.0,
            new_is_regression: false,
            rank: 4,
        },
        Metric {
            id: "syscalls.p97",
            table: TABLE,
            title: "System call p97 latency",
            keys: &["syscall_name"],
            only: &[],
            except: &[("syscall_name", WAITS), ("syscall_name", PEER_READS)],
            measure: Measure::Quantile {
                q: 0.97,
                min_samples: MIN_LATENCY_SAMPLES,
            },
            threshold: 1.0,
            floor: 1e6,
            new_is_regression: false,
            rank: 5,
        },
    ],
    drops: Some(KernelDrops::of::<SyscallDrop>),
    setup,
    hooks: super::no_hooks,
    build,
};

/// Syscalls that wait (for events, peers, locks, children or the clock) rather than do work: how
/// many are made, how many return EAGAIN/ETIMEDOUT and how long they take follow the load's
/// timing and the scheduler (workers racing on one listening socket, an event loop woken more
/// often when idle), not the code. `diff` leaves them out of its decisions; `summary` and the
/// tables keep them.
pub const WAITS: &[&str] = &[
    "accept",
    "accept4",
    "clock_nanosleep",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "futex",
    "futex_waitv",
    "io_getevents",
    "io_pgetevents",
    "nanosleep",
    "pause",
    "poll",
    "ppoll",
    "pselect6",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "sched_yield",
    "select",
    "wait4",
    "waitid",
];

/// Receives whose latency is the peer's (a database, a client) rather than the caller's: their
/// p97 is left out of `diff`'s decisions (the SQL and HTTP tables time those exchanges).
pub const PEER_READS: &[&str] = &["read", "readv", "recvfrom", "recvmsg", "recvmmsg"];

fn setup(k: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    let slots = k.pid_max.next_power_of_two().min(MAX_INFLIGHT_SLOTS);
    let inflight_slots = k.masked_entries(SYSCALL_INFLIGHT, slots, 1);
    let slots = crate::snapshot::slots::setup(k, SYSCALL_SLOTS);
    k.global(
        common::CONFIG,
        &SyscallsConfig {
            inflight_mask: inflight_slots - 1,
            latency: u32::from(k.settings.syscall_latency.measures()),
            exit_nr: k.arch.exit_nr(),
            exit_group_nr: k.arch.exit_group_nr(),
            slots,
        },
    );
    k.map_entries(SYSCALL_INFLIGHT, inflight_slots);
    Ok(())
}

fn build(ebpf: &mut Ebpf, b: &Build<'_>) -> super::Built {
    Ok(Some(Box::new(SyscallTracer::new(
        ebpf,
        b.arch,
        b.settings.syscall_latency,
    )?)))
}

/// Whether syscall latency is measured (sys_enter must be attached).
pub fn measures_latency(s: &Settings) -> bool {
    s.syscall_latency.measures()
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = interval_process_fields();
    fields.extend([
        Field::new("syscall_id", DataType::Int32, false),
        Field::new("syscall_name", DataType::Utf8, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
    ]);
    fields.extend(latency_fields());
    Arc::new(Schema::new(fields))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

impl Counters for SyscallStats {
    fn zero() -> Self {
        SyscallStats::ZERO
    }

    fn combine(&self, o: &Self, op: Op) -> Self {
        SyscallStats {
            calls: op.u64(self.calls, o.calls),
            errors: op.u64(self.errors, o.errors),
            timed_calls: op.u64(self.timed_calls, o.timed_calls),
            duration_ns: op.u64(self.duration_ns, o.duration_ns),
            hist: op.hist(self.hist, &o.hist),
        }
    }

    fn is_zero(&self) -> bool {
        self.calls == 0 && self.timed_calls == 0
    }
}

pub struct SyscallTracer {
    stats: StatsMap<SyscallKey, SyscallStats>,
    /// The totals read at the last snapshot.
    totals: Vec<(SyscallKey, SyscallStats)>,
    sampling: Sampling,
    arch: Arch,
}

impl SyscallTracer {
    pub fn new(ebpf: &mut Ebpf, arch: Arch, mode: LatencyMode) -> Result<Self, TracerError> {
        let stats = StatsMap::take_with_slots(ebpf, SYSCALL_STATS, SYSCALL_SLOTS)?;
        let shifts = maps::take_as(ebpf, SYSCALL_SAMPLE_SHIFT)?;
        let mut sampling = Sampling::new(shifts, mode);
        sampling.apply()?;
        Ok(SyscallTracer {
            stats,
            totals: Vec::new(),
            sampling,
            arch,
        })
    }
}

/// The per-syscall latency sampling periods in the kernel, and how they follow the rates.
struct Sampling {
    map: Array<MapData, [u8; 8]>,
    mode: LatencyMode,
    /// log2 of the sampling period per syscall number, as last written.
    shifts: [u8; SYSCALL_NRS as usize],
    written: Option<[u8; SYSCALL_NRS as usize]>,
}

impl Sampling {
    fn new(map: Array<MapData, [u8; 8]>, mode: LatencyMode) -> Sampling {
        let initial = match mode {
            LatencyMode::Sampled { shift } => shift.min(MAX_SAMPLE_SHIFT),
            // Auto starts exact and samples a syscall once its rate is known.
            LatencyMode::Auto { .. } | LatencyMode::Exact | LatencyMode::Off => 0,
        };
        Sampling {
            map,
            mode,
            shifts: [initial; SYSCALL_NRS as usize],
            written: None,
        }
    }

    /// In auto mode, picks each syscall's period from its calls in the last interval.
    fn adapt(&mut self, calls_per_nr: &HashMap<u32, u64>, seconds: f64) {
        let LatencyMode::Auto { target } = self.mode else {
            return;
        };
        for (nr, shift) in self.shifts.iter_mut().enumerate() {
            let calls = calls_per_nr.get(&(nr as u32)).copied().unwrap_or(0);
            *shift = auto_shift(calls as f64 / seconds.max(1e-3), target);
        }
    }

    /// Writes the elements that changed.
    fn apply(&mut self) -> Result<(), MapAccessError> {
        for (i, chunk) in self.shifts.chunks_exact(8).enumerate() {
            let value: [u8; 8] = chunk.try_into().expect("chunks of 8");
            if self.written.is_some_and(|w| w[i * 8..i * 8 + 8] == value) {
                continue;
            }
            self.map
                .set(i as u32, value, 0)
                .map_err(MapAccessError::of(SYSCALL_SAMPLE_SHIFT))?;
        }
        self.written = Some(self.shifts);
        Ok(())
    }
}

/// The smallest sampling shift that brings `rate` calls/s down to at most `target` timed calls/s.
fn auto_shift(rate: f64, target: u32) -> u8 {
    let mut shift = 0u8;
    while shift < MAX_SAMPLE_SHIFT && rate / f64::from(1u32 << shift) > f64::from(target) {
        shift += 1;
    }
    shift
}

/// Rows of one interval, ready to become a batch.
#[derive(Default)]
struct Rows {
    process: IntervalProcessColumns,
    id: Int32Builder,
    name: StringBuilder,
    calls: Int64Builder,
    errors: Int64Builder,
    latency: LatencyColumns,
    len: usize,
}

impl Tracer for SyscallTracer {
    fn snapshot(&mut self, _processes: &Processes) -> Result<(), TracerError> {
        self.totals = self.stats.totals()?;
        Ok(())
    }

    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let mut totals = std::mem::take(&mut self.totals);
        totals.sort_by_key(|(k, _)| (k.tgid, k.generation, k.nr));
        let mut rows = Rows::default();
        let mut calls_per_nr: HashMap<u32, u64> = HashMap::new();
        for (key, total) in totals {
            let Some(d) = self.stats.delta(key, total) else {
                continue;
            };
            let process = key.process();
            *calls_per_nr.entry(key.nr).or_default() += d.calls;
            rows.process
                .append(interval, process, processes.get(process));
            rows.id.append_value(key.nr as i32);
            rows.name.append_value(self.arch.syscall_name(key.nr));
            rows.calls.append_value(d.calls as i64);
            rows.errors.append_value(d.errors as i64);
            rows.latency.append(d.duration_ns, d.timed_calls, &d.hist);
            rows.len += 1;
        }
        let seconds = (interval.end_unix_ns - interval.start_unix_ns) as f64 / 1e9;
        self.sampling.adapt(&calls_per_nr, seconds);
        self.sampling.apply()?;
        if rows.len == 0 {
            return Ok(Vec::new());
        }
        let mut columns = rows.process.finish();
        columns.extend::<[ArrayRef; 4]>([
            Arc::new(rows.id.finish()),
            Arc::new(rows.name.finish()),
            Arc::new(rows.calls.finish()),
            Arc::new(rows.errors.finish()),
        ]);
        columns.extend(rows.latency.finish());
        batch(TABLE, schema(), columns).map(|b| vec![(TABLE, b)])
    }

    fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), TracerError> {
        Ok(self.stats.reap(ended)?)
    }
}

const _: () = assert!(BUCKETS == 40, "schemas/syscalls.toml documents 40 buckets");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_syscalls_are_timed_every_time_frequent_ones_sampled() {
        assert_eq!(auto_shift(0.0, 1000), 0);
        assert_eq!(auto_shift(1000.0, 1000), 0);
        assert_eq!(auto_shift(1001.0, 1000), 1);
        assert_eq!(auto_shift(8000.0, 1000), 3);
        assert_eq!(auto_shift(5_000_000.0, 1000), MAX_SAMPLE_SHIFT);
    }

    #[test]
    fn the_waits_diff_leaves_out_are_syscall_names_as_the_table_writes_them() {
        use crate::syscall_names::Arch;
        let written: std::collections::BTreeSet<String> =
            (0..1024).map(|nr| Arch::X86_64.syscall_name(nr)).collect();
        for name in WAITS.iter().chain(PEER_READS) {
            assert!(
                written.contains(*name),
                "{name} is not an x86_64 syscall name"
            );
        }
        for m in REGISTRATION.metrics {
            assert_eq!(m.except[0], ("syscall_name", WAITS), "{}", m.id);
        }
    }
}
