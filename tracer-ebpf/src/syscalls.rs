//! The syscall tracer: `raw_syscalls:sys_enter` and `sys_exit` as BTF tracepoints.
//!
//! sys_exit counts every call (exact) into a per-CPU hash keyed by (process, syscall). When
//! latency is measured, sys_enter stamps the thread's in-flight slot and sys_exit turns the stamp
//! into a histogram bucket. Nothing per call goes to user space.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_get_prandom_u32},
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use tracer_common::{
    drops::DropReason,
    hist,
    maps::SYSCALL_STATS_ENTRIES,
    syscalls::{InFlight, SAMPLE_SHIFT_NRS, SyscallKey, SyscallStats, is_error},
};

use crate::{config::setting, drops, targets::traced_generation};

/// Sized by the loader to `inflight_mask + 1` entries.
#[map]
static SYSCALL_INFLIGHT: Array<InFlight> = Array::with_max_entries(1, 0);

#[map]
static SYSCALL_STATS: PerCpuHashMap<SyscallKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(SYSCALL_STATS_ENTRIES, 0);

/// Per syscall number, the log2 of its latency sampling period (eight numbers per element).
#[map]
static SYSCALL_SAMPLE_SHIFT: Array<[u8; 8]> = Array::with_max_entries(SAMPLE_SHIFT_NRS / 8, 0);

/// Per-CPU xorshift32 state that picks which calls to time when sampling.
#[map]
static SYSCALL_SAMPLE_STATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// True for a pseudo-random one call in `2^shift`. Random rather than every n-th call: a loop
/// of n syscalls would otherwise always time the same one.
#[inline(always)]
fn sample(shift: u32) -> bool {
    let Some(state) = SYSCALL_SAMPLE_STATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; programs on one CPU do not run concurrently on it.
    unsafe {
        let mut x = *state;
        if x == 0 {
            x = bpf_get_prandom_u32() | 1;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *state = x;
        x & ((1u32 << (shift & 31)) - 1) == 0
    }
}

/// `sys_enter(struct pt_regs *regs, long id)`.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if traced_generation((pid_tgid >> 32) as u32).is_none() {
        return 0;
    }
    let nr: i64 = ctx.arg(1);
    let nr = nr as u32;
    let shift = match SYSCALL_SAMPLE_SHIFT.get(nr / 8) {
        Some(shifts) => u32::from(shifts[(nr % 8) as usize]),
        None => 0,
    };
    if shift != 0 && !sample(shift) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let Some(slot) = SYSCALL_INFLIGHT.get_ptr_mut(tid & setting!(inflight_mask)) else {
        return 0;
    };
    // SAFETY: `slot` points into the array's memory. Another CPU may write the same slot only if
    // a traced thread with a colliding tid is in a syscall at the same moment; the tid check in
    // sys_exit then discards the torn stamp.
    unsafe {
        if (*slot).start_ns != 0 && (*slot).tid != tid {
            drops::count(DropReason::SyscallLatencyLost);
        }
        (*slot).tid = tid;
        (*slot).nr = nr;
        (*slot).weight_shift = shift;
        (*slot).start_ns = bpf_ktime_get_ns();
    }
    0
}

/// `sys_exit(struct pt_regs *regs, long ret)`.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(generation) = traced_generation(tgid) else {
        return 0;
    };
    let ret: i64 = ctx.arg(1);
    let tid = pid_tgid as u32;
    // Plain integers rather than an Option: the verifier cannot see that the branches setting and
    // reading an Option agree, and rejects the path where they seem not to.
    let mut nr = NO_NR;
    let mut timed = false;
    let mut latency_ns: u64 = 0;
    let mut weight_shift: u32 = 0;
    if setting!(syscall_latency) != 0
        && let Some(slot) = SYSCALL_INFLIGHT.get_ptr_mut(tid & setting!(inflight_mask))
    {
        // SAFETY: see sys_enter.
        unsafe {
            if (*slot).tid == tid && (*slot).start_ns != 0 {
                nr = (*slot).nr;
                latency_ns = bpf_ktime_get_ns().wrapping_sub((*slot).start_ns);
                weight_shift = (*slot).weight_shift;
                timed = true;
                (*slot).start_ns = 0;
            }
        }
    }
    if nr == NO_NR {
        let regs: *const u8 = ctx.arg(0);
        nr = syscall_nr(regs);
        if ret == 0 && is_fork_family(nr) {
            // The child's return from fork/clone: it did not make the call (its parent did).
            return 0;
        }
        if nr == u32::MAX {
            // orig_ax is -1 at exit only after rt_sigreturn restored a signal frame.
            nr = setting!(rt_sigreturn_nr);
        }
    }
    record(
        &SyscallKey {
            tgid,
            generation,
            nr,
        },
        is_error(ret),
        timed,
        latency_ns,
        weight_shift,
    );
    let regs: *const u8 = ctx.arg(0);
    crate::fileio::on_exit(
        tgid,
        generation,
        nr,
        regs,
        ret,
        timed,
        latency_ns,
        weight_shift,
    );
    0
}

/// Marks "number not known yet"; no architecture has this many syscalls.
const NO_NR: u32 = u32::MAX - 2;

/// fork, vfork, clone, clone3 (numbers from `CONFIG`; absent ones are NO_SYSCALL).
#[inline(always)]
fn is_fork_family(nr: u32) -> bool {
    nr == setting!(clone_nr)
        || nr == setting!(clone3_nr)
        || nr == setting!(fork_nr)
        || nr == setting!(vfork_nr)
}

/// The syscall number saved in `regs` (`orig_ax` on x86_64, `syscallno` on arm64; the loader
/// finds the offset in the kernel's BTF).
#[inline(always)]
pub fn syscall_nr(regs: *const u8) -> u32 {
    crate::kernel::btf_field(regs, setting!(regs_syscall_nr_offset))
}

/// Adds one call to the (process, syscall) stats of this CPU; when `timed`, its latency `ns`
/// counts `2^shift` times (it was timed with probability `2^-shift`).
#[inline(always)]
pub fn record(key: &SyscallKey, error: bool, timed: bool, ns: u64, shift: u32) {
    let stats = match SYSCALL_STATS.get_ptr_mut(key) {
        Some(stats) => stats,
        None => {
            // Another CPU may insert the same key first (EEXIST): the lookup below still finds it.
            if let Some(zero) = crate::zero::zeroed::<SyscallStats>() {
                let _ = SYSCALL_STATS.insert(key, zero, u64::from(BPF_NOEXIST));
            }
            match SYSCALL_STATS.get_ptr_mut(key) {
                Some(stats) => stats,
                None => {
                    drops::count(DropReason::SyscallStatsFull);
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's copy of the value; programs do not nest on a CPU for these tracepoints.
    unsafe {
        (*stats).calls += 1;
        if error {
            (*stats).errors += 1;
        }
        if timed {
            let shift = shift & 31;
            (*stats).timed_calls += 1;
            (*stats).duration_ns += ns << shift;
            let bucket = hist::bucket(ns);
            if let Some(count) = (*stats).hist.get_mut(bucket) {
                *count = count.wrapping_add(1 << shift);
            }
        }
    }
}

/// Called for every exiting thread of a traced process: `exit` and `exit_group` never reach
/// sys_exit, so they are counted here (when that is why the thread exits), and the thread's
/// in-flight slot is freed.
#[inline(always)]
pub fn on_thread_exit(tgid: u32, generation: u32, tid: u32, nr: u32) {
    if nr == setting!(exit_nr) || nr == setting!(exit_group_nr) {
        record(
            &SyscallKey {
                tgid,
                generation,
                nr,
            },
            false,
            false,
            0,
            0,
        );
    }
    if setting!(syscall_latency) != 0
        && let Some(slot) = SYSCALL_INFLIGHT.get_ptr_mut(tid & setting!(inflight_mask))
    {
        // SAFETY: see sys_enter.
        unsafe {
            if (*slot).tid == tid {
                (*slot).start_ns = 0;
            }
        }
    }
}
