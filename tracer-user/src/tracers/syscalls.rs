//! The `syscalls` table: per interval, per process, per syscall: calls, errors, latency.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int32Builder, Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuHashMap},
};
use tracer_common::{
    hist::BUCKETS,
    maps::SYSCALL_STATS,
    syscalls::{SyscallKey, SyscallStats},
};

use super::{
    Interval, Tracer, TracerError,
    columns::{HistogramColumn, IntervalProcessColumns, histogram, interval_process_fields},
    take_map,
};
use crate::{
    processes::{ProcessKey, Registry},
    snapshot::{Counters, Deltas, remove_keys, sum_per_cpu},
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
        Field::new("duration_ns_sum", DataType::Int64, false),
        Field::new("duration_timed_calls", DataType::Int64, false),
        Field::new("duration_histogram", histogram(), false),
    ]);
    Arc::new(Schema::new(fields))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

impl Counters for SyscallStats {
    fn zero() -> Self {
        SyscallStats::ZERO
    }

    fn add(&self, o: &Self) -> Self {
        let mut hist = self.hist;
        for (h, x) in hist.iter_mut().zip(o.hist) {
            *h = h.wrapping_add(x);
        }
        SyscallStats {
            calls: self.calls.wrapping_add(o.calls),
            errors: self.errors.wrapping_add(o.errors),
            timed_calls: self.timed_calls.wrapping_add(o.timed_calls),
            duration_ns: self.duration_ns.wrapping_add(o.duration_ns),
            hist,
        }
    }

    fn minus(&self, o: &Self) -> Self {
        let mut hist = self.hist;
        for (h, x) in hist.iter_mut().zip(o.hist) {
            *h = h.wrapping_sub(x);
        }
        SyscallStats {
            calls: self.calls.wrapping_sub(o.calls),
            errors: self.errors.wrapping_sub(o.errors),
            timed_calls: self.timed_calls.wrapping_sub(o.timed_calls),
            duration_ns: self.duration_ns.wrapping_sub(o.duration_ns),
            hist,
        }
    }

    fn is_zero(&self) -> bool {
        self.calls == 0 && self.timed_calls == 0
    }
}

pub struct SyscallTracer {
    stats: PerCpuHashMap<MapData, SyscallKey, SyscallStats>,
    deltas: Deltas<SyscallKey, SyscallStats>,
    arch: Arch,
}

impl SyscallTracer {
    pub fn new(ebpf: &mut Ebpf, arch: Arch) -> Result<Self, TracerError> {
        let stats = PerCpuHashMap::try_from(take_map(ebpf, SYSCALL_STATS)?).map_err(|source| {
            TracerError::Map {
                map: SYSCALL_STATS,
                source,
            }
        })?;
        Ok(SyscallTracer {
            stats,
            deltas: Deltas::default(),
            arch,
        })
    }
}

/// Rows of one interval, ready to become a batch.
#[derive(Default)]
struct Rows {
    process: IntervalProcessColumns,
    id: Int32Builder,
    name: StringBuilder,
    calls: Int64Builder,
    errors: Int64Builder,
    duration: Int64Builder,
    timed: Int64Builder,
    hist: HistogramColumn,
    len: usize,
}

impl Tracer for SyscallTracer {
    fn table(&self) -> &'static str {
        TABLE
    }

    fn collect(
        &mut self,
        interval: &Interval,
        processes: &Registry,
    ) -> Result<Option<RecordBatch>, TracerError> {
        let mut totals = sum_per_cpu(&self.stats).map_err(|source| TracerError::Map {
            map: SYSCALL_STATS,
            source,
        })?;
        totals.sort_by_key(|(k, _)| (k.tgid, k.generation, k.nr));
        let mut rows = Rows::default();
        for (key, total) in totals {
            let Some(d) = self.deltas.delta(key, total) else {
                continue;
            };
            let process = ProcessKey {
                tgid: key.tgid,
                generation: key.generation,
            };
            rows.process
                .append(interval, process, processes.get(process));
            rows.id.append_value(key.nr as i32);
            rows.name.append_value(self.arch.syscall_name(key.nr));
            rows.calls.append_value(d.calls as i64);
            rows.errors.append_value(d.errors as i64);
            rows.duration.append_value(d.duration_ns as i64);
            rows.timed.append_value(d.timed_calls as i64);
            rows.hist.append(&d.hist);
            rows.len += 1;
        }
        if rows.len == 0 {
            return Ok(None);
        }
        let mut columns = rows.process.finish();
        columns.extend::<[ArrayRef; 7]>([
            Arc::new(rows.id.finish()),
            Arc::new(rows.name.finish()),
            Arc::new(rows.calls.finish()),
            Arc::new(rows.errors.finish()),
            Arc::new(rows.duration.finish()),
            Arc::new(rows.timed.finish()),
            rows.hist.finish(),
        ]);
        RecordBatch::try_new(schema(), columns)
            .map(Some)
            .map_err(|source| TracerError::Arrow {
                table: TABLE,
                source,
            })
    }

    fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), TracerError> {
        let doomed = |k: &SyscallKey| {
            ended.contains(&ProcessKey {
                tgid: k.tgid,
                generation: k.generation,
            })
        };
        remove_keys(&mut self.stats, doomed).map_err(|source| TracerError::Map {
            map: SYSCALL_STATS,
            source,
        })?;
        self.deltas.forget(|k| !doomed(k));
        Ok(())
    }
}

const _: () = assert!(BUCKETS == 40, "schemas/syscalls.toml documents 40 buckets");
