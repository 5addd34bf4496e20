//! The `fileio` table: per interval, process, kind of descriptor and syscall family: calls,
//! errors, bytes and latency.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use tracer_common::{
    fileio::{FileIoKey, FileIoStats, FileKind, FileOp, class},
    maps::{FILEIO_OPS, FILEIO_STATS},
    sql::shape,
    syscalls::SAMPLE_SHIFT_NRS,
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
    snapshot::{Counters, Op, StatsMap},
    syscall_names::Arch,
};

pub const TABLE: &str = "fileio";

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

/// The FILEIO_OPS table for an architecture: per syscall number its class
/// (`tracer_common::fileio::class`).
pub fn ops_table(arch: Arch) -> [u16; SAMPLE_SHIFT_NRS as usize] {
    let mut table = [0u16; SAMPLE_SHIFT_NRS as usize];
    for (nr, slot) in table.iter_mut().enumerate() {
        let name = arch.syscall_name(nr as u32);
        if let Some(op) = FileOp::of_syscall(&name) {
            let kind = match FileOp::implied_kind(&name) {
                Some(FileKind::File) => class::KIND_FILE,
                Some(FileKind::Socket) => class::KIND_SOCKET,
                _ => class::KIND_RESOLVE,
            };
            let not_bytes = if name.ends_with("mmsg") {
                class::NOT_BYTES
            } else {
                0
            };
            let buffer = shape::of_syscall(&name) << shape::SHIFT;
            *slot = op as u16 | (kind << class::KIND_SHIFT) | not_bytes | buffer;
        }
    }
    table
}

pub struct FileIoTracer {
    stats: StatsMap<FileIoKey, FileIoStats>,
}

/// Fills the kernel's table of syscall classes (FILEIO_OPS).
pub fn fill_ops(ebpf: &mut Ebpf, arch: Arch) -> Result<(), TracerError> {
    let map_err = |source| TracerError::Map {
        map: FILEIO_OPS,
        source,
    };
    let mut ops: Array<MapData, [u16; 4]> =
        Array::try_from(take_map(ebpf, FILEIO_OPS)?).map_err(map_err)?;
    for (i, chunk) in ops_table(arch).chunks_exact(4).enumerate() {
        let value: [u16; 4] = chunk.try_into().expect("chunks of 4");
        if value != [0; 4] {
            ops.set(i as u32, value, 0).map_err(map_err)?;
        }
    }
    Ok(())
}

impl FileIoTracer {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, TracerError> {
        Ok(FileIoTracer {
            stats: StatsMap::take(ebpf, FILEIO_STATS)?,
        })
    }
}

impl Tracer for FileIoTracer {
    fn tables(&self) -> Vec<(&'static str, SchemaRef)> {
        vec![(TABLE, schema())]
    }

    fn collect(
        &mut self,
        interval: &Interval,
        processes: &Registry,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let mut totals = self.stats.totals()?;
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
        self.stats.reap(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ops_table_covers_the_read_write_families() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let table = ops_table(arch);
            let op_of = |name: &str| {
                let nr = (0..SAMPLE_SHIFT_NRS).find(|nr| arch.syscall_name(*nr) == name);
                nr.map(|nr| table[nr as usize])
            };
            let file = class::KIND_FILE << class::KIND_SHIFT;
            let socket = class::KIND_SOCKET << class::KIND_SHIFT;
            let contiguous = shape::CONTIGUOUS << shape::SHIFT;
            let iovec = shape::IOVEC << shape::SHIFT;
            let mmsg = shape::MMSGHDR << shape::SHIFT;
            assert_eq!(
                op_of("pwrite64"),
                Some(FileOp::Write as u16 | file | contiguous)
            );
            assert_eq!(op_of("readv"), Some(FileOp::Read as u16 | iovec));
            assert_eq!(op_of("fdatasync"), Some(FileOp::Fdatasync as u16 | file));
            assert_eq!(
                op_of("sendmmsg"),
                Some(FileOp::Send as u16 | socket | class::NOT_BYTES | mmsg)
            );
            assert_eq!(op_of("getppid"), Some(0));
        }
    }
}
