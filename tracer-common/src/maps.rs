//! Names of the maps both sides use, in one place.

/// `Array<[u8; 8]>` indexed by `tgid / 8`: one byte per process ([`crate::process::TracedByte`]).
pub const TRACED: &str = "TRACED";
/// Ring buffer of [`crate::process::ProcessEvent`]s (fork, exec, exit).
pub const PROCESS_EVENTS: &str = "PROCESS_EVENTS";
/// `PerCpuArray<u64>` indexed by [`crate::drops::DropReason`].
pub const DROPS: &str = "DROPS";
/// `Array<InFlight>`: the syscall each traced thread is in, indexed by `tid & inflight_mask`.
pub const SYSCALL_INFLIGHT: &str = "SYSCALL_INFLIGHT";
/// `Array<[u8; 8]>`: per syscall number (eight per element), the log2 of its sampling
/// period for latency (0: time every call). The loader adapts it to each syscall's rate.
pub const SYSCALL_SAMPLE_SHIFT: &str = "SYSCALL_SAMPLE_SHIFT";
/// `PerCpuHashMap<SyscallKey, SyscallStats>`.
pub const SYSCALL_STATS: &str = "SYSCALL_STATS";

/// Name of the read-only global holding [`crate::config::Config`].
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// Bytes in [`PROCESS_EVENTS`]: fork/exec/exit events are rare; 1 MiB holds ~3,000 of them,
/// several seconds of the worst process churn.
pub const PROCESS_EVENTS_BYTES: u32 = 1024 * 1024;
/// Default capacity of [`SYSCALL_STATS`]: (process, syscall) pairs alive at once. A busy service
/// process uses 50–100 distinct syscalls, so this holds some 200–300 processes; ended processes are
/// reaped after their last interval is written.
pub const SYSCALL_STATS_ENTRIES: u32 = 32 * 1024;
