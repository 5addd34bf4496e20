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
    self as common, EXIT_REGS_HELPER, EXIT_REGS_NONE, EXIT_REGS_STACK, ProcessConfig, ProcessDrop,
    TGIDS_PER_ELEMENT, TRACED,
};

use super::{KernelDrops, Registration, Table, columns::timestamp};
use crate::{
    kernel::{
        btf::BtfError,
        support::{Choice, Need, Otherwise, Way},
    },
    loader::KernelSetup,
    probes::Probe,
    processes::ProcessRecord,
};

pub const TABLE: &str = "processes";

pub static REGISTRATION: Registration = Registration {
    name: "process",
    selectable: false,
    wanted: super::always,
    probes: &[
        Probe::new(
            "sched_process_fork",
            "sched_process_fork",
            &["task_struct", "task_struct"],
        ),
        Probe::new("sched_process_exec", "sched_process_exec", &[]),
        Probe::new("sched_process_exit", "sched_process_exit", &[]),
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

/// Where the registers of a thread that exits are, for the syscall it exits in (exit and
/// exit_group never return, so they are counted then).
const EXIT_REGS: Choice = Choice {
    what: "syscall number of an exiting thread",
    ways: &[
        Way {
            value: EXIT_REGS_HELPER,
            name: "bpf_task_pt_regs",
            needs: &[
                Need::Helper("task_pt_regs"),
                Need::Helper("get_current_task_btf"),
            ],
        },
        // x86_64's entry code saves the registers at the top of the task's kernel stack:
        // task_pt_regs() is stack + THREAD_SIZE - sizeof(struct pt_regs) (16 KiB stacks, no top
        // padding before FRED, which came with 6.9, long after bpf_task_pt_regs: kernels that
        // lack the helper have none). KASAN doubles the stack: not with it. Not on arm64, whose
        // stack size follows the page size.
        Way {
            value: EXIT_REGS_STACK,
            name: "pt_regs at the top of task_struct.stack (x86_64, THREAD_SIZE 16 KiB)",
            needs: &[
                Need::Arch(&["x86_64"]),
                Need::Field("task_struct", "stack"),
                Need::NoType("kasan_report"),
            ],
        },
    ],
    otherwise: Otherwise::Lost("exit and exit_group calls are not counted"),
};

/// x86_64's THREAD_SIZE (PAGE_SIZE << 2, without KASAN).
const X86_64_THREAD_SIZE: u32 = 16 * 1024;

fn setup(k: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    let b = k.btf;
    let off = |s: &str, f: &str| b.field_offset(s, f);
    let exit_regs = k.choose(&EXIT_REGS)?.unwrap_or(EXIT_REGS_NONE);
    let (task_stack_offset, stack_regs_offset) = if exit_regs == EXIT_REGS_STACK {
        (
            off("task_struct", "stack")?,
            X86_64_THREAD_SIZE - b.struct_size("pt_regs")?,
        )
    } else {
        (0, 0)
    };
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
        exit_regs,
        task_stack_offset,
        stack_regs_offset,
    };
    k.global(common::CONFIG, &config);
    k.map_entries(TRACED, traced_elements);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::support::fake;

    fn way(k: &fake::Kernel, arch: &str) -> Option<u32> {
        EXIT_REGS.value(&EXIT_REGS.decide(k, arch))
    }

    #[test]
    fn exiting_threads_registers_by_kernel() {
        let stack = fake::Kernel::default().field("task_struct", "stack", "void *");
        // 5.10: neither helper.
        assert_eq!(way(&stack, "x86_64"), Some(EXIT_REGS_STACK));
        // 5.11–5.14 (RHEL 9 unless backported): the BTF task, not its registers.
        let rhel9 = fake::Kernel {
            helpers: vec!["get_current_task_btf"],
            ..stack
        };
        assert_eq!(way(&rhel9, "x86_64"), Some(EXIT_REGS_STACK));
        // 5.15 and later.
        let new = rhel9.helper("task_pt_regs");
        assert_eq!(way(&new, "x86_64"), Some(EXIT_REGS_HELPER));
        assert_eq!(way(&new, "aarch64"), Some(EXIT_REGS_HELPER));
    }

    #[test]
    fn no_stack_guess_where_its_size_is_not_known() {
        let old = fake::Kernel::default().field("task_struct", "stack", "void *");
        // arm64's stack follows the page size (64 KiB pages on RHEL).
        assert_eq!(way(&old, "aarch64"), None);
        // KASAN doubles x86_64's stack.
        let kasan = fake::Kernel {
            types: vec!["kasan_report"],
            ..old
        };
        assert_eq!(way(&kasan, "x86_64"), None);
        let d = EXIT_REGS.decide(&kasan, "x86_64");
        assert_eq!(
            d.because,
            [
                "no helper bpf_task_pt_regs, no helper bpf_get_current_task_btf",
                "kasan_report is in this kernel"
            ]
        );
    }
}
