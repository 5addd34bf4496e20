//! The `cache_ops` table: per interval, process, server and command: calls, hits, misses,
//! errors, latency, bytes.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int32Builder, Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use tracer_common::hist::{self, BUCKETS};

use super::CacheOp;
use crate::{
    processes::{ProcessKey, Processes},
    tracers::{
        Interval, TracerError,
        columns::{
            HistogramColumn, IntervalProcessColumns, batch, histogram, interval_process_fields,
        },
    },
};

pub const TABLE: &str = "cache_ops";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = interval_process_fields();
    fields.extend([
        Field::new("db_system_name", DataType::Utf8, false),
        Field::new("server_address", DataType::Utf8, false),
        Field::new("server_port", DataType::Int32, true),
        Field::new("network_transport", DataType::Utf8, false),
        Field::new("db_operation_name", DataType::Utf8, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("keys", DataType::Int64, false),
        Field::new("hits", DataType::Int64, false),
        Field::new("misses", DataType::Int64, false),
        Field::new("lookups", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("answered_calls", DataType::Int64, false),
        Field::new("duration_ns_sum", DataType::Int64, false),
        Field::new("duration_histogram", histogram(), false),
        Field::new("bytes_sent", DataType::Int64, false),
        Field::new("bytes_received", DataType::Int64, false),
    ]);
    Arc::new(Schema::new(fields))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// One row's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    pub process: ProcessKey,
    pub server_address: String,
    pub server_port: Option<u16>,
    pub transport: &'static str,
    pub command: &'static str,
}

/// One row's sums.
#[derive(Clone, Debug, Default)]
pub struct CacheSums {
    calls: u64,
    keys: u64,
    hits: u64,
    misses: u64,
    errors: u64,
    answered: u64,
    duration_ns: u64,
    hist: Option<[u32; BUCKETS]>,
    bytes_sent: u64,
    bytes_received: u64,
}

impl CacheSums {
    pub fn add(&mut self, op: &CacheOp) {
        self.calls += 1;
        self.keys += u64::from(op.keys);
        self.hits += u64::from(op.hits);
        self.misses += u64::from(op.misses);
        if op.error {
            self.errors += 1;
        }
        if let Some(ns) = op.duration_ns() {
            self.answered += 1;
            self.duration_ns += ns;
            self.hist.get_or_insert([0; BUCKETS])[hist::bucket(ns)] += 1;
        }
        self.bytes_sent += op.bytes_sent;
        self.bytes_received += op.bytes_received;
    }
}

pub fn cache_batch(
    interval: &Interval,
    processes: &Processes,
    rows: &[(CacheKey, CacheSums)],
) -> Result<RecordBatch, TracerError> {
    let mut process = IntervalProcessColumns::default();
    let (mut system, mut address, mut transport, mut command) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut port = Int32Builder::new();
    let mut ints: [Int64Builder; 8] = Default::default();
    let mut hist = HistogramColumn::default();
    let mut bytes: [Int64Builder; 2] = Default::default();
    for (k, s) in rows {
        process.append(interval, k.process, processes.get(k.process));
        system.append_value("memcached");
        address.append_value(&k.server_address);
        port.append_option(k.server_port.map(i32::from));
        transport.append_value(k.transport);
        command.append_value(k.command);
        for (b, v) in ints.iter_mut().zip([
            s.calls,
            s.keys,
            s.hits,
            s.misses,
            s.hits + s.misses,
            s.errors,
            s.answered,
            s.duration_ns,
        ]) {
            b.append_value(v as i64);
        }
        hist.append(&s.hist.unwrap_or([0; BUCKETS]));
        bytes[0].append_value(s.bytes_sent as i64);
        bytes[1].append_value(s.bytes_received as i64);
    }
    let mut columns = process.finish();
    columns.extend::<[ArrayRef; 5]>([
        Arc::new(system.finish()),
        Arc::new(address.finish()),
        Arc::new(port.finish()),
        Arc::new(transport.finish()),
        Arc::new(command.finish()),
    ]);
    columns.extend(ints.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(hist.finish());
    columns.push(Arc::new(bytes[0].finish()));
    columns.push(Arc::new(bytes[1].finish()));
    batch(TABLE, schema(), columns)
}
