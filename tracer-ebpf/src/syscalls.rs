//! The syscall tracer's hooks (called by [`crate::dispatch`] at sys_enter and sys_exit).
//!
//! sys_exit counts every call (exact) into its CPU's slot of the (process, syscall) pair in
//! `SYSCALL_SLOTS` ([`crate::slots`]), or, when another pair holds that slot, into a per-CPU hash
//! keyed by the pair. When latency is measured, sys_enter stamps the thread's in-flight slot and sys_exit turns the stamp
//! into a histogram bucket. Nothing per call goes to user space.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    helpers::{bpf_ktime_get_ns, generated::bpf_get_prandom_u32},
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap},
};
use tracer_common::{
    dispatch::SYSCALL_NRS,
    drops::Reasons as _,
    hist,
    syscalls::{
        InFlight, SYSCALL_STATS_ENTRIES, SyscallDrop, SyscallKey, SyscallSlot, SyscallStats,
        SyscallsConfig,
    },
};

use crate::kernel::{config_global, count_drop, setting};

config_global!(SYSCALLS_CONFIG: SyscallsConfig);

/// Sized by the loader to `inflight_mask + 1` entries.
#[map]
static SYSCALL_INFLIGHT: Array<InFlight> = Array::with_max_entries(1, 0);

/// Sized by the loader to `(slots.mask + 1) × CPUs` entries.
#[map]
static SYSCALL_SLOTS: Array<SyscallSlot> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map]
static SYSCALL_STATS: PerCpuHashMap<SyscallKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(SYSCALL_STATS_ENTRIES, 0);

/// Per syscall number, the log2 of its latency sampling period (eight numbers per element).
#[map]
static SYSCALL_SAMPLE_SHIFT: Array<[u8; 8]> = Array::with_max_entries(SYSCALL_NRS / 8, 0);

/// Per-CPU xorshift32 state that picks which calls to time when sampling.
#[map]
static SYSCALL_SAMPLE_STATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SYSCALLS_DROPS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(SyscallDrop::ALL.len() as u32, 0);

#[inline(always)]
fn dropped(reason: SyscallDrop) {
    count_drop(&SYSCALLS_DROPS, reason.index());
}

/// Whether syscall latency is measured (sys_enter is attached).
#[inline(always)]
pub fn measures_latency() -> bool {
    setting!(SYSCALLS_CONFIG.latency) != 0
}

/// A syscall's latency as sys_exit found it: timed or not, and with which weight.
#[derive(Clone, Copy)]
pub struct Timing {
    pub timed: bool,
    pub ns: u64,
    /// The call was timed with probability `2^-shift`; it stands for `2^shift` calls.
    pub shift: u32,
}

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

/// At sys_enter of a traced thread: stamp its in-flight slot if this call is to be timed.
#[inline(always)]
pub fn on_enter(tid: u32, nr: u32) {
    let shift = match SYSCALL_SAMPLE_SHIFT.get(nr / 8) {
        Some(shifts) => u32::from(shifts[(nr % 8) as usize]),
        None => 0,
    };
    if shift != 0 && !sample(shift) {
        return;
    }
    let Some(slot) = SYSCALL_INFLIGHT.get_ptr_mut(tid & setting!(SYSCALLS_CONFIG.inflight_mask))
    else {
        return;
    };
    // SAFETY: `slot` points into the array's memory. Another CPU may write the same slot only if
    // a traced thread with a colliding tid is in a syscall at the same moment; the tid check in
    // sys_exit then discards the torn stamp.
    unsafe {
        if (*slot).start_ns != 0 && (*slot).tid != tid {
            dropped(SyscallDrop::LatencyLost);
        }
        (*slot).tid = tid;
        (*slot).nr = nr;
        (*slot).weight_shift = shift;
        (*slot).start_ns = bpf_ktime_get_ns();
    }
}

/// At sys_exit: the number and timing of the call the thread stamped at entry, if it did.
#[inline(always)]
pub fn take_stamp(tid: u32) -> Option<(u32, Timing)> {
    if !measures_latency() {
        return None;
    }
    let slot = SYSCALL_INFLIGHT.get_ptr_mut(tid & setting!(SYSCALLS_CONFIG.inflight_mask))?;
    // SAFETY: see on_enter.
    unsafe {
        if (*slot).tid != tid || (*slot).start_ns == 0 {
            return None;
        }
        let timing = Timing {
            timed: true,
            ns: bpf_ktime_get_ns().wrapping_sub((*slot).start_ns),
            shift: (*slot).weight_shift,
        };
        (*slot).start_ns = 0;
        Some(((*slot).nr, timing))
    }
}

/// Adds one call to the (process, syscall) stats of this CPU; when timed, its latency counts
/// `2^shift` times (it was timed with probability `2^-shift`).
#[inline(always)]
pub fn record(key: &SyscallKey, error: bool, timing: &Timing) {
    let stats = match crate::slots::stats(&SYSCALL_SLOTS, setting!(SYSCALLS_CONFIG.slots), key)
        .or_else(|| SYSCALL_STATS.get_ptr_mut(key))
    {
        Some(stats) => stats,
        None => {
            // Another CPU may insert the same key first (EEXIST): the lookup below still finds it.
            if let Some(zero) = crate::zero::zeroed::<SyscallStats>() {
                let _ = SYSCALL_STATS.insert(key, zero, u64::from(BPF_NOEXIST));
            }
            match SYSCALL_STATS.get_ptr_mut(key) {
                Some(stats) => stats,
                None => {
                    dropped(SyscallDrop::StatsFull);
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
        if timing.timed {
            let shift = timing.shift & 31;
            (*stats).timed_calls += 1;
            (*stats).duration_ns += timing.ns << shift;
            let bucket = hist::bucket(timing.ns);
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
    if nr == setting!(SYSCALLS_CONFIG.exit_nr) || nr == setting!(SYSCALLS_CONFIG.exit_group_nr) {
        let untimed = Timing {
            timed: false,
            ns: 0,
            shift: 0,
        };
        record(
            &SyscallKey {
                tgid,
                generation,
                nr,
            },
            false,
            &untimed,
        );
    }
    if measures_latency()
        && let Some(slot) =
            SYSCALL_INFLIGHT.get_ptr_mut(tid & setting!(SYSCALLS_CONFIG.inflight_mask))
    {
        // SAFETY: see on_enter.
        unsafe {
            if (*slot).tid == tid {
                (*slot).start_ns = 0;
            }
        }
    }
}
