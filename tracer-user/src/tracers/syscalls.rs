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
    hist::BUCKETS,
    maps::{SYSCALL_SAMPLE_SHIFT, SYSCALL_STATS},
    syscalls::{MAX_SAMPLE_SHIFT, SAMPLE_SHIFT_NRS, SyscallKey, SyscallStats},
};

use super::{
    Interval, Tracer, TracerError,
    columns::{
        IntervalProcessColumns, LatencyColumns, batch, interval_process_fields, latency_fields,
    },
    take_map,
};
use crate::{
    processes::{OfProcess, ProcessKey, Registry},
    settings::LatencyMode,
    snapshot::{Counters, Op, StatsMap},
    syscall_names::Arch,
};

pub const TABLE: &str = "syscalls";

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
    sampling: Sampling,
    arch: Arch,
}

impl SyscallTracer {
    pub fn new(ebpf: &mut Ebpf, arch: Arch, mode: LatencyMode) -> Result<Self, TracerError> {
        let stats = StatsMap::take(ebpf, SYSCALL_STATS)?;
        let shifts = Array::try_from(take_map(ebpf, SYSCALL_SAMPLE_SHIFT)?).map_err(|source| {
            TracerError::Map {
                map: SYSCALL_SAMPLE_SHIFT,
                source,
            }
        })?;
        let mut sampling = Sampling::new(shifts, mode);
        sampling.apply()?;
        Ok(SyscallTracer {
            stats,
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
    shifts: [u8; SAMPLE_SHIFT_NRS as usize],
    written: Option<[u8; SAMPLE_SHIFT_NRS as usize]>,
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
            shifts: [initial; SAMPLE_SHIFT_NRS as usize],
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
    fn apply(&mut self) -> Result<(), TracerError> {
        for (i, chunk) in self.shifts.chunks_exact(8).enumerate() {
            let value: [u8; 8] = chunk.try_into().expect("chunks of 8");
            if self.written.is_some_and(|w| w[i * 8..i * 8 + 8] == value) {
                continue;
            }
            self.map
                .set(i as u32, value, 0)
                .map_err(|source| TracerError::Map {
                    map: SYSCALL_SAMPLE_SHIFT,
                    source,
                })?;
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
    fn tables(&self) -> Vec<(&'static str, SchemaRef)> {
        vec![(TABLE, schema())]
    }

    fn collect(
        &mut self,
        interval: &Interval,
        processes: &Registry,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let mut totals = self.stats.totals()?;
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
        self.stats.reap(ended)
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
}
