//! Process tracking's registration and the `processes` table (every traced process once per
//! run). The session drives the tracking itself (`run::tracking`): it owns the process events
//! and the processes every other tracer's rows refer to.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    RecordBatch,
    builder::{Int32Builder, StringBuilder, TimestampMicrosecondBuilder},
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use tracer_common::process::{
    self as common, ProcessConfig, ProcessDrop, TGIDS_PER_ELEMENT, TRACED,
};

use super::{KernelDrops, Registration, Table, columns::timestamp};
use crate::{
    kernel::btf::BtfError,
    loader::KernelSetup,
    probes::{Probe, always},
    processes::ProcessRecord,
};

pub const TABLE: &str = "processes";

pub static REGISTRATION: Registration = Registration {
    name: "process",
    selectable: false,
    wanted: super::always,
    probes: &[
        Probe {
            program: "sched_process_fork",
            tracepoint: "sched_process_fork",
            wanted: always,
        },
        Probe {
            program: "sched_process_exec",
            tracepoint: "sched_process_exec",
            wanted: always,
        },
        Probe {
            program: "sched_process_exit",
            tracepoint: "sched_process_exit",
            wanted: always,
        },
    ],
    tables: &[Table {
        name: TABLE,
        schema,
        summary: None,
    }],
    metrics: &[],
    drops: Some(KernelDrops::of::<ProcessDrop>),
    setup,
    hooks: super::no_hooks,
    build: super::no_collector,
};

fn setup(k: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    let b = k.btf;
    let off = |s: &str, f: &str| b.field_offset(s, f);
    let traced_elements = k.pid_max.div_ceil(TGIDS_PER_ELEMENT);
    let config = ProcessConfig {
        traced_elements,
        watch_exec: u32::from(k.settings.watch_exec),
        exit_has_group_dead: u32::from(b.require_tracepoint("sched_process_exit")? >= 2),
        regs_syscall_nr_offset: off("pt_regs", k.arch.regs_syscall_nr_field())?,
        task_pid_offset: off("task_struct", "pid")?,
        task_tgid_offset: off("task_struct", "tgid")?,
        task_start_boottime_offset: off("task_struct", "start_boottime")?,
        task_exit_code_offset: off("task_struct", "exit_code")?,
        task_signal_offset: off("task_struct", "signal")?,
        signal_live_offset: off("signal_struct", "live")?,
        task_mm_offset: off("task_struct", "mm")?,
        mm_arg_start_offset: off("mm_struct", "arg_start")?,
        mm_arg_end_offset: off("mm_struct", "arg_end")?,
        _pad: 0,
    };
    k.global(common::CONFIG, &config);
    k.map_entries(TRACED, traced_elements);
    Ok(())
}

/// Number of `TRACED` elements for a pid_max.
pub fn traced_elements(pid_max: u32) -> u32 {
    pid_max.div_ceil(TGIDS_PER_ELEMENT)
}

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
