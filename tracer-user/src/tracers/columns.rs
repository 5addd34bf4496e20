//! Columns every interval table starts with, and the latency histogram column.

use std::sync::Arc;

use arrow_array::{
    ArrayRef,
    builder::{
        Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
    },
};
use arrow_schema::{DataType, Field, TimeUnit};
use tracer_common::hist::BUCKETS;

use super::Interval;
use crate::processes::{ProcessKey, ProcessRecord};

/// `timestamp[us, tz=UTC]`.
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The `list<item: int64>` of histogram bucket counts.
pub fn histogram() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Int64, true)))
}

/// interval_start, interval_end, process_pid, process_start_time, process_name.
pub fn interval_process_fields() -> Vec<Field> {
    vec![
        Field::new("interval_start", timestamp(), false),
        Field::new("interval_end", timestamp(), false),
        Field::new("process_pid", DataType::Int32, false),
        Field::new("process_start_time", timestamp(), true),
        Field::new("process_name", DataType::Utf8, false),
    ]
}

/// Builders for [`interval_process_fields`].
#[derive(Default)]
pub struct IntervalProcessColumns {
    interval_start: TimestampMicrosecondBuilder,
    interval_end: TimestampMicrosecondBuilder,
    pid: Int32Builder,
    start: TimestampMicrosecondBuilder,
    name: StringBuilder,
}

impl IntervalProcessColumns {
    pub fn append(&mut self, interval: &Interval, key: ProcessKey, record: Option<&ProcessRecord>) {
        self.interval_start
            .append_value(interval.start_unix_ns / 1000);
        self.interval_end.append_value(interval.end_unix_ns / 1000);
        self.pid.append_value(key.tgid as i32);
        self.start
            .append_option(record.and_then(|r| r.start_unix_ns).map(|ns| ns / 1000));
        self.name
            .append_value(record.map_or("", |r| r.name.as_str()));
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.interval_start.finish().with_timezone("UTC")),
            Arc::new(self.interval_end.finish().with_timezone("UTC")),
            Arc::new(self.pid.finish()),
            Arc::new(self.start.finish().with_timezone("UTC")),
            Arc::new(self.name.finish()),
        ]
    }
}

/// Builder of a histogram column from `BUCKETS` u32 counts per row.
pub struct HistogramColumn(ListBuilder<Int64Builder>);

impl Default for HistogramColumn {
    fn default() -> Self {
        HistogramColumn(ListBuilder::new(Int64Builder::new()))
    }
}

impl HistogramColumn {
    pub fn append(&mut self, counts: &[u32; BUCKETS]) {
        self.0.values().append_slice(&counts.map(i64::from));
        self.0.append(true);
    }

    pub fn finish(&mut self) -> ArrayRef {
        Arc::new(self.0.finish())
    }
}

/// duration_ns_sum, duration_timed_calls, duration_histogram: latency measured as the syscall
/// tracer measures it (exact or sampled and weighted).
pub fn latency_fields() -> Vec<Field> {
    vec![
        Field::new("duration_ns_sum", DataType::Int64, false),
        Field::new("duration_timed_calls", DataType::Int64, false),
        Field::new("duration_histogram", histogram(), false),
    ]
}

/// Builders for [`latency_fields`].
#[derive(Default)]
pub struct LatencyColumns {
    sum: Int64Builder,
    timed: Int64Builder,
    hist: HistogramColumn,
}

impl LatencyColumns {
    pub fn append(&mut self, duration_ns: u64, timed_calls: u64, hist: &[u32; BUCKETS]) {
        self.sum.append_value(duration_ns as i64);
        self.timed.append_value(timed_calls as i64);
        self.hist.append(hist);
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.sum.finish()),
            Arc::new(self.timed.finish()),
            self.hist.finish(),
        ]
    }
}

/// Wraps up a batch, naming the table in the error.
pub fn batch(
    table: &'static str,
    schema: arrow_schema::SchemaRef,
    columns: Vec<ArrayRef>,
) -> Result<arrow_array::RecordBatch, super::TracerError> {
    arrow_array::RecordBatch::try_new(schema, columns)
        .map_err(|source| super::TracerError::Arrow { table, source })
}
