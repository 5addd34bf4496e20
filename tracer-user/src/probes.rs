//! Which kernel program attaches where, and when: data, not `if`s.
//!
//! Every program is a BTF tracepoint (tp_btf). kprobes and fentry are not used: they are missing
//! or refused on some kernels (CONFIG_KPROBES=n, lockdown policies), while tp_btf needs only BTF
//! and costs the least per hit of the tracepoint kinds. A tp_btf program's return value is
//! ignored by the kernel, so other users of the same tracepoints (perf, ftrace) keep seeing every
//! event.

use crate::settings::Settings;

/// One program of the object.
pub struct Probe {
    /// Function name in tracer-ebpf.
    pub program: &'static str,
    /// The tracepoint (`btf_trace_<name>` in the kernel's BTF).
    pub tracepoint: &'static str,
    /// The tracer it feeds (for messages).
    pub tracer: &'static str,
    /// Whether these settings need it.
    pub wanted: fn(&Settings) -> bool,
}

fn always(_: &Settings) -> bool {
    true
}

fn syscall_latency(s: &Settings) -> bool {
    s.syscall_latency.measures()
}

fn blockio(s: &Settings) -> bool {
    s.blockio
}

fn blockio_fallback(s: &Settings) -> bool {
    s.blockio && s.block_fallback
}

/// Every program, in attach order: process tracking first, so that a child forked while the
/// other programs attach is already marked.
pub const PROBES: &[Probe] = &[
    Probe {
        program: "sched_process_fork",
        tracepoint: "sched_process_fork",
        tracer: "process",
        wanted: always,
    },
    Probe {
        program: "sched_process_exec",
        tracepoint: "sched_process_exec",
        tracer: "process",
        wanted: always,
    },
    Probe {
        program: "sched_process_exit",
        tracepoint: "sched_process_exit",
        tracer: "process",
        wanted: always,
    },
    Probe {
        program: "sys_enter",
        tracepoint: "sys_enter",
        tracer: "syscalls",
        wanted: syscall_latency,
    },
    Probe {
        program: "sys_exit",
        tracepoint: "sys_exit",
        tracer: "syscalls",
        wanted: always,
    },
    // Block I/O: submission, issue, completion, the rare requeue/merge/error, and the writeback
    // hand-over. block_rq_insert and block_rq_complete stand in for block_io_start/done only when
    // some device does not account I/O (they would cost two program runs per request).
    Probe {
        program: "block_io_start",
        tracepoint: "block_io_start",
        tracer: "blockio",
        wanted: blockio,
    },
    Probe {
        program: "block_rq_insert",
        tracepoint: "block_rq_insert",
        tracer: "blockio",
        wanted: blockio_fallback,
    },
    Probe {
        program: "block_rq_issue",
        tracepoint: "block_rq_issue",
        tracer: "blockio",
        wanted: blockio,
    },
    Probe {
        program: "block_rq_requeue",
        tracepoint: "block_rq_requeue",
        tracer: "blockio",
        wanted: blockio,
    },
    Probe {
        program: "block_rq_merge",
        tracepoint: "block_rq_merge",
        tracer: "blockio",
        wanted: blockio,
    },
    Probe {
        program: "block_rq_error",
        tracepoint: "block_rq_error",
        tracer: "blockio",
        wanted: blockio,
    },
    Probe {
        program: "block_rq_complete",
        tracepoint: "block_rq_complete",
        tracer: "blockio",
        wanted: blockio_fallback,
    },
    Probe {
        program: "block_io_done",
        tracepoint: "block_io_done",
        tracer: "blockio",
        wanted: blockio,
    },
    Probe {
        program: "writeback_dirty_folio",
        tracepoint: "writeback_dirty_folio",
        tracer: "blockio",
        wanted: blockio,
    },
    Probe {
        program: "writeback_single_inode_start",
        tracepoint: "writeback_single_inode_start",
        tracer: "blockio",
        wanted: blockio,
    },
    Probe {
        program: "writeback_single_inode",
        tracepoint: "writeback_single_inode",
        tracer: "blockio",
        wanted: blockio,
    },
];

/// Empty programs on the syscall and block tracepoints (`scalp-bpf calibrate`).
pub const CALIBRATION: &[Probe] = &[
    Probe {
        program: "calibrate_sys_enter",
        tracepoint: "sys_enter",
        tracer: "calibrate",
        wanted: always,
    },
    Probe {
        program: "calibrate_sys_exit",
        tracepoint: "sys_exit",
        tracer: "calibrate",
        wanted: always,
    },
    Probe {
        program: "calibrate_block_io_start",
        tracepoint: "block_io_start",
        tracer: "calibrate",
        wanted: always,
    },
    Probe {
        program: "calibrate_block_rq_issue",
        tracepoint: "block_rq_issue",
        tracer: "calibrate",
        wanted: always,
    },
    Probe {
        program: "calibrate_block_io_done",
        tracepoint: "block_io_done",
        tracer: "calibrate",
        wanted: always,
    },
];
