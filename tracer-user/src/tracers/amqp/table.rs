//! The `rpc_calls` table: per interval, process, direction, exchange, routing key, method and
//! kind: messages, errors, call latencies, bytes.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use tracer_common::hist::{self, BUCKETS};

use super::RpcRecord;
use crate::{
    processes::{ProcessKey, Processes},
    tracers::{
        Interval, TracerError,
        columns::{
            HistogramColumn, IntervalProcessColumns, batch, histogram, interval_process_fields,
        },
    },
};

pub const TABLE: &str = "rpc_calls";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = interval_process_fields();
    fields.extend([
        Field::new("direction", DataType::Utf8, false),
        Field::new("messaging_destination_name", DataType::Utf8, false),
        Field::new("messaging_rabbitmq_routing_key", DataType::Utf8, false),
        Field::new("rpc_method", DataType::Utf8, false),
        Field::new("rpc_kind", DataType::Utf8, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("timeouts", DataType::Int64, false),
        Field::new("replied_calls", DataType::Int64, false),
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

/// A routing key or exchange with its per-instance parts (reply queue ids, UUIDs, long hex
/// strings) replaced by `{id}`, so that `reply_<uuid>` is one row, not one per caller.
pub fn template_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let hex = run.chars().filter(|c| c.is_ascii_hexdigit()).count();
        if hex >= 16 && run.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            out.push_str("{id}");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in key.chars() {
        if c.is_ascii_hexdigit() || c == '-' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// One row's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcKey {
    pub process: ProcessKey,
    pub direction: &'static str,
    pub exchange: String,
    pub routing_key: String,
    pub method: String,
    pub kind: &'static str,
}

/// One row's sums.
#[derive(Clone, Debug, Default)]
pub struct RpcSums {
    calls: u64,
    errors: u64,
    timeouts: u64,
    replied: u64,
    duration_ns: u64,
    hist: Option<[u32; BUCKETS]>,
    bytes_sent: u64,
    bytes_received: u64,
}

impl RpcSums {
    pub fn add<K>(&mut self, r: &RpcRecord<K>) {
        self.calls += 1;
        if r.error {
            self.errors += 1;
        }
        if r.timed_out {
            self.timeouts += 1;
        }
        if let Some(ns) = r.duration_ns {
            self.replied += 1;
            self.duration_ns += ns;
            self.hist.get_or_insert([0; BUCKETS])[hist::bucket(ns)] += 1;
        }
        self.bytes_sent += r.bytes_sent;
        self.bytes_received += r.bytes_received;
    }
}

pub fn rpc_batch(
    interval: &Interval,
    processes: &Processes,
    rows: &[(RpcKey, RpcSums)],
) -> Result<RecordBatch, TracerError> {
    let mut process = IntervalProcessColumns::default();
    let mut strings: [StringBuilder; 5] = Default::default();
    let mut ints: [Int64Builder; 5] = Default::default();
    let mut sums: [Int64Builder; 2] = Default::default();
    let mut hist = HistogramColumn::default();
    for (k, s) in rows {
        process.append(interval, k.process, processes.get(k.process));
        for (b, v) in
            strings
                .iter_mut()
                .zip([k.direction, &k.exchange, &k.routing_key, &k.method, k.kind])
        {
            b.append_value(v);
        }
        for (b, v) in ints
            .iter_mut()
            .zip([s.calls, s.errors, s.timeouts, s.replied, s.duration_ns])
        {
            b.append_value(v as i64);
        }
        hist.append(&s.hist.unwrap_or([0; BUCKETS]));
        sums[0].append_value(s.bytes_sent as i64);
        sums[1].append_value(s.bytes_received as i64);
    }
    let mut columns = process.finish();
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend(ints.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(hist.finish());
    columns.push(Arc::new(sums[0].finish()));
    columns.push(Arc::new(sums[1].finish()));
    batch(TABLE, schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_queues_and_ids_become_one_key() {
        assert_eq!(
            template_key("reply_4b8c5c1e9b2a4a7cb1d2e3f405162738"),
            "reply_{id}"
        );
        assert_eq!(
            template_key("reply_4b8c5c1e-9b2a-4a7c-b1d2-e3f405162738"),
            "reply_{id}"
        );
        assert_eq!(template_key("compute.host-1"), "compute.host-1");
        assert_eq!(template_key("scalp_test"), "scalp_test");
        assert_eq!(template_key(""), "");
    }
}
