//! Which kernel program attaches where, and when: data, not `if`s. Each tracer lists its probe
//! rows in its registration (`crate::tracers`); this module holds the row type and the empty
//! programs `scalp-bpf calibrate` attaches.
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
    /// Whether these settings need it.
    pub wanted: fn(&Settings) -> bool,
}

/// For probes every run of their tracer wants.
pub fn always(_: &Settings) -> bool {
    true
}

/// Empty programs on the syscall and block tracepoints (`scalp-bpf calibrate`).
pub const CALIBRATION: &[Probe] = &[
    Probe {
        program: "calibrate_sys_enter",
        tracepoint: "sys_enter",
        wanted: always,
    },
    Probe {
        program: "calibrate_sys_exit",
        tracepoint: "sys_exit",
        wanted: always,
    },
    Probe {
        program: "calibrate_block_io_start",
        tracepoint: "block_io_start",
        wanted: always,
    },
    Probe {
        program: "calibrate_block_rq_issue",
        tracepoint: "block_rq_issue",
        wanted: always,
    },
    Probe {
        program: "calibrate_block_io_done",
        tracepoint: "block_io_done",
        wanted: always,
    },
];
