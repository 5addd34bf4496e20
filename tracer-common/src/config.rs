//! Settings the loader writes into the kernel programs' read-only data before loading them.
//!
//! The verifier treats loads from a frozen read-only map as constants, so branches on these
//! settings cost nothing at run time and field offsets read here are as good as compiled-in ones.

/// The `CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `SYSCALL_INFLIGHT` has `inflight_mask + 1` entries (a power of two).
    pub inflight_mask: u32,
    /// Measure syscall latency (1) or only count calls and errors (0).
    pub syscall_latency: u32,
    /// Send exec events of untraced processes too (to pick up late starters by name).
    pub watch_exec: u32,
    /// `sched_process_exit` passes `group_dead` (Linux ≥ 6.16); else read `signal->live`.
    pub exit_has_group_dead: u32,
    /// Number of `TRACED` elements (pid_max / 8, rounded up).
    pub traced_elements: u32,
    /// Syscall numbers on this architecture (`NO_SYSCALL` where it has none): `exit` and
    /// `exit_group` never return; `rt_sigreturn` returns with the number -1 in the registers; the
    /// fork family returns 0 a second time, in the child, which did not make the call.
    pub exit_nr: u32,
    pub exit_group_nr: u32,
    pub rt_sigreturn_nr: u32,
    pub clone_nr: u32,
    pub clone3_nr: u32,
    pub fork_nr: u32,
    pub vfork_nr: u32,
    /// Offsets into kernel structures, read from the running kernel's BTF.
    pub regs_syscall_nr_offset: u32,
    pub task_pid_offset: u32,
    pub task_tgid_offset: u32,
    pub task_start_boottime_offset: u32,
    pub task_exit_code_offset: u32,
    pub task_signal_offset: u32,
    pub signal_live_offset: u32,
    pub task_mm_offset: u32,
    pub mm_arg_start_offset: u32,
    pub mm_arg_end_offset: u32,
    pub _pad: u32,
}

/// A syscall number no architecture uses.
pub const NO_SYSCALL: u32 = u32::MAX - 1;

const _: () = assert!(core::mem::size_of::<Config>() == 92);

impl Config {
    /// The value compiled into the object; the loader always overwrites it.
    pub const UNSET: Config = Config {
        inflight_mask: 0,
        syscall_latency: 0,
        watch_exec: 0,
        exit_has_group_dead: 0,
        traced_elements: 0,
        exit_nr: 0,
        exit_group_nr: 0,
        rt_sigreturn_nr: 0,
        clone_nr: 0,
        clone3_nr: 0,
        fork_nr: 0,
        vfork_nr: 0,
        regs_syscall_nr_offset: 0,
        task_pid_offset: 0,
        task_tgid_offset: 0,
        task_start_boottime_offset: 0,
        task_exit_code_offset: 0,
        task_signal_offset: 0,
        signal_live_offset: 0,
        task_mm_offset: 0,
        mm_arg_start_offset: 0,
        mm_arg_end_offset: 0,
        _pad: 0,
    };
}
