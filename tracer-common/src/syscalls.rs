//! The syscall tracer's maps, types, drops and configuration.

use crate::{
    hist::BUCKETS,
    slots::{SLOT_BYTES, Slot, SlotKey, SlotsConfig},
};

/// `PerCpuHashMap<SyscallKey, SyscallStats>`.
pub const SYSCALL_STATS: &str = "SYSCALL_STATS";
/// `Array<InFlight>`: the syscall each traced thread is in, indexed by `tid & inflight_mask`.
pub const SYSCALL_INFLIGHT: &str = "SYSCALL_INFLIGHT";
/// `Array<[u8; 8]>`: per syscall number (eight per element), the log2 of its sampling
/// period for latency (0: time every call). The loader adapts it to each syscall's rate.
pub const SYSCALL_SAMPLE_SHIFT: &str = "SYSCALL_SAMPLE_SHIFT";
/// `Array<SyscallSlot>` (BPF_F_MMAPABLE): [`crate::slots`] in front of `SYSCALL_STATS`.
pub const SYSCALL_SLOTS: &str = "SYSCALL_SLOTS";
/// The read-only global holding [`SyscallsConfig`].
pub const CONFIG: &str = "SYSCALLS_CONFIG";

/// Default capacity of [`SYSCALL_STATS`]: (process, syscall) pairs alive at once. A busy service
/// process uses 50–100 distinct syscalls, so this holds some 200–300 processes; ended processes are
/// reaped after their last interval is written.
pub const SYSCALL_STATS_ENTRIES: u32 = 32 * 1024;

/// The syscall tracer's settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallsConfig {
    /// `SYSCALL_INFLIGHT` has `inflight_mask + 1` entries (a power of two).
    pub inflight_mask: u32,
    /// Measure syscall latency (1) or only count calls and errors (0).
    pub latency: u32,
    /// `exit` and `exit_group` never return: they are counted when the thread exits.
    pub exit_nr: u32,
    pub exit_group_nr: u32,
    /// `SYSCALL_SLOTS`.
    pub slots: SlotsConfig,
}

const _: () = assert!(core::mem::size_of::<SyscallsConfig>() == 24);

crate::drop_reasons! {
    /// What the syscall tracer can lose.
    pub enum SyscallDrop for ("syscalls", "SYSCALLS_DROPS") {
        /// A (process, syscall) pair could not be added: `SYSCALL_STATS` is full. The call is
        /// lost.
        StatsFull = 0 => "stats_map_full",
        /// A syscall's latency could not be measured because another traced thread whose tid
        /// maps to the same in-flight slot overwrote its start time. The call is still counted.
        LatencyLost = 1 => "latency_slot_collision",
    }
}

crate::pod!(
    SyscallsConfig,
    SyscallKey,
    SyscallStats,
    InFlight,
    SyscallSlot
);

impl SlotKey for SyscallKey {
    #[inline(always)]
    fn words(&self) -> [u32; 3] {
        [self.tgid, self.generation, self.nr]
    }
}

/// Key of `SYSCALL_STATS`: one (process incarnation, syscall number).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallKey {
    pub tgid: u32,
    /// The process's generation (see [`crate::process`]).
    pub generation: u32,
    /// The syscall number as the architecture numbers it.
    pub nr: u32,
}

const _: () = assert!(core::mem::size_of::<SyscallKey>() == 12);

/// Value of `SYSCALL_STATS`, one per CPU. Counters only grow; the loader takes deltas.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallStats {
    /// Calls that returned (plus `exit`/`exit_group`, counted when the thread exits).
    pub calls: u64,
    /// Calls that returned -4095..=-1 (an errno).
    pub errors: u64,
    /// Calls whose latency was measured (all of them unless sampled, bar calls already under way
    /// when tracing began and `exit`/`exit_group`).
    pub timed_calls: u64,
    /// Sum of the measured latencies, each weighted by `2^weight_shift` (ns): an unbiased
    /// estimate of the total time of all calls, exact when nothing is sampled.
    pub duration_ns: u64,
    /// Calls per log2 latency bucket ([`crate::hist`]), each timed call weighted like
    /// `duration_ns`. u32 per CPU: the loader sums and subtracts with wrapping arithmetic, exact
    /// while one interval adds fewer than 2^32.
    pub hist: [u32; BUCKETS],
}

const _: () = assert!(core::mem::size_of::<SyscallStats>() == 32 + 4 * BUCKETS);

impl SyscallStats {
    pub const ZERO: SyscallStats = SyscallStats {
        calls: 0,
        errors: 0,
        timed_calls: 0,
        duration_ns: 0,
        hist: [0; BUCKETS],
    };
}

/// Value of `SYSCALL_SLOTS`.
pub type SyscallSlot = Slot<SyscallKey, SyscallStats, 48>;

const _: () = assert!(core::mem::size_of::<SyscallSlot>() == SLOT_BYTES);

/// Value of `SYSCALL_INFLIGHT`: the syscall a traced thread entered and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The thread; a slot whose tid differs belongs to another thread.
    pub tid: u32,
    pub nr: u32,
    /// `bpf_ktime_get_ns()` at entry; 0 when the slot is free.
    pub start_ns: u64,
    /// The call was timed with probability `2^-weight_shift`; it stands for `2^weight_shift`.
    pub weight_shift: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<InFlight>() == 24);

/// Syscall numbers covered by `SYSCALL_SAMPLE_SHIFT` (x86_64 and arm64 stay below 512).
pub const SAMPLE_SHIFT_NRS: u32 = 512;
/// Largest sampling shift: time at least one call in 1024.
pub const MAX_SAMPLE_SHIFT: u8 = 10;

/// `-4095..=-1`: the range in which a raw syscall return value is an errno.
#[inline(always)]
pub const fn is_error(ret: i64) -> bool {
    ret < 0 && ret >= -4095
}
