//! The `processes` table: every traced process once per run.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    RecordBatch,
    builder::{Int32Builder, StringBuilder, TimestampMicrosecondBuilder},
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use super::columns::timestamp;
use crate::processes::ProcessRecord;

pub const TABLE: &str = "processes";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("process_pid", DataType::Int32, false),
        Field::new("process_parent_pid", DataType::Int32, false),
        Field::new("process_name", DataType::Utf8, false),
        Field::new("process_command_line", DataType::Utf8, false),
        Field::new("process_start_time", timestamp(), true),
        Field::new("process_end_time", timestamp(), true),
        Field::new("process_exit_code", DataType::Int32, true),
        Field::new("process_exit_signal", DataType::Int32, true),
        Field::new("process_traced_start_time", timestamp(), false),
        Field::new("process_traced_reason", DataType::Utf8, false),
    ]))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The rows for `records`.
pub fn batch(records: &[ProcessRecord]) -> Result<RecordBatch, ArrowError> {
    let mut pid = Int32Builder::new();
    let mut ppid = Int32Builder::new();
    let mut name = StringBuilder::new();
    let mut cmdline = StringBuilder::new();
    let mut start = TimestampMicrosecondBuilder::new();
    let mut end = TimestampMicrosecondBuilder::new();
    let mut code = Int32Builder::new();
    let mut signal = Int32Builder::new();
    let mut traced = TimestampMicrosecondBuilder::new();
    let mut reason = StringBuilder::new();
    for r in records {
        pid.append_value(r.pid() as i32);
        ppid.append_value(r.parent_pid as i32);
        name.append_value(&r.name);
        cmdline.append_value(&r.command_line);
        start.append_option(r.start_unix_ns.map(|ns| ns / 1000));
        end.append_option(r.end_unix_ns.map(|ns| ns / 1000));
        code.append_option(r.exit_code);
        signal.append_option(r.exit_signal);
        traced.append_value(r.traced_since_unix_ns / 1000);
        reason.append_value(r.reason.to_string());
    }
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(pid.finish()),
            Arc::new(ppid.finish()),
            Arc::new(name.finish()),
            Arc::new(cmdline.finish()),
            Arc::new(start.finish().with_timezone("UTC")),
            Arc::new(end.finish().with_timezone("UTC")),
            Arc::new(code.finish()),
            Arc::new(signal.finish()),
            Arc::new(traced.finish().with_timezone("UTC")),
            Arc::new(reason.finish()),
        ],
    )
}
