//! scalp-bpf's kernel programs. Each tracer is one module; [`dispatch`] owns the syscall
//! tracepoints and calls the tracers' hooks; `targets` decides, first thing in every program,
//! whether the current task belongs to a traced process.
#![no_std]
#![no_main]
// Atomic adds: core's atomic types are not available for the BPF target, its intrinsics are
// (RUSTC_BOOTSTRAP=1 is set for the eBPF build).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod blockio;
mod calibrate;
mod dispatch;
mod fileio;
mod kernel;
mod process;
mod python;
mod slots;
mod sockets;
mod syscalls;
mod targets;
mod zero;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that can reach this loop, so it is never taken.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
