//! The `fileio` table: per interval, process, kind of descriptor and syscall family: calls,
//! errors, bytes and latency.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use aya::Ebpf;
use tracer_common::{
    dispatch::{HOOK_FILEIO, KIND_MASK, KIND_RESOLVE, KIND_SHIFT, RESOLVE_FD},
    fileio::{FILEIO_STATS, FileIoDrop, FileIoKey, FileIoStats, FileKind, FileOp},
};

use super::{
    Build, Interval, KernelDrops, Registration, Table, Tracer, TracerError,
    columns::{
        IntervalProcessColumns, LatencyColumns, batch, interval_process_fields, latency_fields,
    },
    dispatch::facts,
    views::{Measure, Metric, TableSpec},
};
use crate::{
    processes::{OfProcess, ProcessKey, Processes},
    settings::Settings,
    snapshot::{Counters, Op, StatsMap},
};

crate::processes::of_process!(FileIoKey);

pub const TABLE: &str = "fileio";

const SYNC_OPS: &[&str] = &["fsync", "fdatasync", "sync_file_range"];

pub static REGISTRATION: Registration = Registration {
    name: "fileio",
    selectable: true,
    // `--files` counts per file what this tracer counts per kind: it needs the same hooks.
    wanted: |s| s.asked_for("fileio") || s.files.is_some(),
    probes: &[],
    tables: &[Table {
        name: TABLE,
        schema,
        summary: Some(TableSpec {
            table: TABLE,
            title: "File I/O",
            keys: &["file_kind", "op"],
            counters: &["calls", "errors", "bytes", "duration_ns_sum"],
            histogram: Some("duration_histogram"),
            default_sort: "bytes",
            rank: 1,
        }),
    }],
    metrics: &[
        Metric {
            id: "fileio.syncs",
            table: TABLE,
            title: "fsync-family calls",
            keys: &["op"],
            only: &[("op", SYNC_OPS)],
            except: &[],
            measure: Measure::Counter("calls"),
            // An fsync costs milliseconds on a real disk and its count per request is set by
            // the code, not by timing: 5 % more is a finding.
            threshold: 0.05,
            floor: 5.0,
            new_is_regression: false,
            rank: 6,
        },
        Metric {
            id: "fileio.write_bytes",
            table: TABLE,
            title: "Bytes written to files",
            keys: &["file_kind"],
            only: &[("op", &["write"]), ("file_kind", &["file"])],
            except: &[],
            measure: Measure::Counter("bytes"),
            threshold: 0.10,
            floor: 1048576.0,
            new_is_regression: false,
            rank: 7,
        },
    ],
    drops: Some(KernelDrops::of::<FileIoDrop>),
    setup: super::no_setup,
    hooks,
    build,
};

/// Every read/write/sync-family syscall, resolving the descriptor when the syscall does not
/// imply its kind.
fn hooks(_: &Settings, name: &str) -> u32 {
    let facts = facts(name);
    if facts == 0 {
        return 0;
    }
    let resolve = if (facts & KIND_MASK) >> KIND_SHIFT == KIND_RESOLVE {
        RESOLVE_FD
    } else {
        0
    };
    HOOK_FILEIO | resolve
}

fn build(ebpf: &mut Ebpf, _: &Build<'_>) -> super::Built {
    Ok(Some(Box::new(FileIoTracer {
        stats: StatsMap::take(ebpf, FILEIO_STATS)?,
        totals: Vec::new(),
    })))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = interval_process_fields();
    fields.extend([
        Field::new("file_kind", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
    ]);
    fields.extend(latency_fields());
    Arc::new(Schema::new(fields))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

impl Counters for FileIoStats {
    fn zero() -> Self {
        FileIoStats::ZERO
    }

    fn combine(&self, o: &Self, op: Op) -> Self {
        FileIoStats {
            calls: op.u64(self.calls, o.calls),
            errors: op.u64(self.errors, o.errors),
            bytes: op.u64(self.bytes, o.bytes),
            timed_calls: op.u64(self.timed_calls, o.timed_calls),
            duration_ns: op.u64(self.duration_ns, o.duration_ns),
            hist: op.hist(self.hist, &o.hist),
        }
    }

    fn is_zero(&self) -> bool {
        self.calls == 0 && self.timed_calls == 0
    }
}

pub struct FileIoTracer {
    stats: StatsMap<FileIoKey, FileIoStats>,
    totals: Vec<(FileIoKey, FileIoStats)>,
}

impl Tracer for FileIoTracer {
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
        totals.sort_by_key(|(k, _)| *k);
        let mut process = IntervalProcessColumns::default();
        let mut kind = StringBuilder::new();
        let mut op = StringBuilder::new();
        let mut calls = Int64Builder::new();
        let mut errors = Int64Builder::new();
        let mut bytes = Int64Builder::new();
        let mut latency = LatencyColumns::default();
        let mut rows = 0;
        for (key, total) in totals {
            let Some(d) = self.stats.delta(key, total) else {
                continue;
            };
            let p = key.process();
            process.append(interval, p, processes.get(p));
            kind.append_value(FileKind::try_from(key.kind).map_or("other", FileKind::name));
            op.append_value(FileOp::try_from(key.op).map_or("other", FileOp::name));
            calls.append_value(d.calls as i64);
            errors.append_value(d.errors as i64);
            bytes.append_value(d.bytes as i64);
            latency.append(d.duration_ns, d.timed_calls, &d.hist);
            rows += 1;
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut columns = process.finish();
        columns.extend::<[ArrayRef; 5]>([
            Arc::new(kind.finish()),
            Arc::new(op.finish()),
            Arc::new(calls.finish()),
            Arc::new(errors.finish()),
            Arc::new(bytes.finish()),
        ]);
        columns.extend(latency.finish());
        batch(TABLE, schema(), columns).map(|b| vec![(TABLE, b)])
    }

    fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), TracerError> {
        Ok(self.stats.reap(ended)?)
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::dispatch::{
        KIND_FILE, KIND_SOCKET, NOT_BYTES, OP_MASK, SHAPE_MASK, SHAPE_SHIFT, SYSCALL_NRS, shape,
    };

    use super::*;
    use crate::syscall_names::Arch;

    #[test]
    fn the_read_write_families_are_hooked_on_both_architectures() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let class_of = |name: &str| {
                let nr = (0..SYSCALL_NRS).find(|nr| arch.syscall_name(*nr) == name);
                nr.map(|nr| hooks(&Settings::minimal(), &arch.syscall_name(nr)) | facts(name))
            };
            let file = KIND_FILE << KIND_SHIFT;
            let socket = KIND_SOCKET << KIND_SHIFT;
            let contiguous = shape::CONTIGUOUS << SHAPE_SHIFT;
            let iovec = shape::IOVEC << SHAPE_SHIFT;
            let mmsg = shape::MMSGHDR << SHAPE_SHIFT;
            assert_eq!(
                class_of("pwrite64"),
                Some(HOOK_FILEIO | FileOp::Write as u32 | file | contiguous)
            );
            assert_eq!(
                class_of("readv"),
                Some(HOOK_FILEIO | RESOLVE_FD | FileOp::Read as u32 | iovec)
            );
            assert_eq!(
                class_of("fdatasync"),
                Some(HOOK_FILEIO | FileOp::Fdatasync as u32 | file)
            );
            assert_eq!(
                class_of("sendmmsg"),
                Some(HOOK_FILEIO | FileOp::Send as u32 | socket | NOT_BYTES | mmsg)
            );
            assert_eq!(class_of("getppid"), Some(0));
            let read = class_of("read").expect("read exists");
            assert_eq!(read & OP_MASK, FileOp::Read as u32);
            assert_eq!((read & SHAPE_MASK) >> SHAPE_SHIFT, shape::CONTIGUOUS);
        }
    }
}
