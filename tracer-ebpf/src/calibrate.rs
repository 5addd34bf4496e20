//! Empty programs on the syscall tracepoints, for `scalp-bpf calibrate`: the benchmark's
//! reference for what merely having a program on these attach points costs.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "sys_enter")]
pub fn calibrate_sys_enter(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn calibrate_sys_exit(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "block_io_start")]
pub fn calibrate_block_io_start(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "block_rq_issue")]
pub fn calibrate_block_rq_issue(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "block_io_done")]
pub fn calibrate_block_io_done(_ctx: BtfTracePointContext) -> i32 {
    0
}
