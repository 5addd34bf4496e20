//! Which processes are traced, and the events that change that (the process tracker: the
//! sched_process_fork/exec/exit programs).
//!
//! The `TRACED` map holds one byte per tgid: bit 0 says "traced", bits 1–7 a generation that
//! changes each time a tgid starts being traced. Syscall and I/O keys carry the generation, so
//! counts of a process that ended and a new one that reused its PID are never merged. Eight bytes
//! share one array element because the kernel rounds array elements up to 8 bytes.

/// `Array<[u8; 8]>` indexed by `tgid / 8`: one byte per process ([`next_traced_byte`]).
pub const TRACED: &str = "TRACED";
/// Ring buffer of [`ProcessEvent`]s (fork, exec, exit).
pub const PROCESS_EVENTS: &str = "PROCESS_EVENTS";
/// The read-only global holding [`ProcessConfig`].
pub const CONFIG: &str = "PROCESS_CONFIG";

/// Bytes in [`PROCESS_EVENTS`]: fork/exec/exit events are rare; 1 MiB holds ~3,000 of them,
/// several seconds of the worst process churn.
pub const PROCESS_EVENTS_BYTES: u32 = 1024 * 1024;

/// The process tracker's settings and the `task_struct` offsets it reads (from the running
/// kernel's BTF; aya-ebpf has no CO-RE, so the loader does the relocation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Number of `TRACED` elements (pid_max / 8, rounded up).
    pub traced_elements: u32,
    /// Send exec events of untraced processes too (to pick up late starters by name).
    pub watch_exec: u32,
    /// `sched_process_exit` passes `group_dead` (Linux ≥ 6.16); else read `signal->live`.
    pub exit_has_group_dead: u32,
    /// Offset of the syscall number in `struct pt_regs` (why a thread exits: exit/exit_group).
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
    /// Where an exiting thread's registers are found ([`EXIT_REGS_HELPER`], …).
    pub exit_regs: u32,
    /// `task_struct.stack`, and the offset of `struct pt_regs` in the stack (THREAD_SIZE -
    /// sizeof(struct pt_regs)), for [`EXIT_REGS_STACK`].
    pub task_stack_offset: u32,
    pub stack_regs_offset: u32,
}

/// [`ProcessConfig::exit_regs`]: no way to the registers (exit and exit_group go uncounted).
pub const EXIT_REGS_NONE: u32 = 0;
/// `bpf_task_pt_regs(bpf_get_current_task_btf())` (Linux ≥ 5.15).
pub const EXIT_REGS_HELPER: u32 = 1;
/// At the top of the task's kernel stack, where the entry code saved them (older kernels).
pub const EXIT_REGS_STACK: u32 = 2;

const _: () = assert!(core::mem::size_of::<ProcessConfig>() == 64);

crate::drop_reasons! {
    /// What the process tracker can lose.
    pub enum ProcessDrop for ("process", "PROCESS_DROPS") {
        /// A process event (fork/exec/exit) did not fit in `PROCESS_EVENTS`. A fork's child is
        /// then not traced (nor its descendants): its map entries could never be reaped. A lost
        /// exec keeps the old name; a lost exit is noticed at the next interval (/proc).
        EventLost = 0 => "event_ring_full",
        /// A tgid beyond the `TRACED` map (pid_max grew after start): that process is not
        /// traced.
        PidOutOfRange = 1 => "pid_beyond_pid_max",
    }
}

crate::pod!(ProcessConfig, ProcessEvent);

/// Bit 0 of a `TRACED` byte.
pub const TRACED_FLAG: u8 = 1;
/// Tgids per `TRACED` element.
pub const TGIDS_PER_ELEMENT: u32 = 8;

/// The byte that marks a tgid traced with the generation after `previous`.
#[inline(always)]
pub const fn next_traced_byte(previous: u8) -> u8 {
    // Generations 0..=127 in bits 1..=7; wrapping is fine: 128 reuses of one PID between two
    // interval snapshots cannot happen.
    (previous.wrapping_add(2) & !TRACED_FLAG) | TRACED_FLAG
}

/// The generation stored in a `TRACED` byte.
#[inline(always)]
pub const fn generation(byte: u8) -> u8 {
    byte >> 1
}

/// What a [`ProcessEvent`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEventKind {
    /// A traced process forked a child, which is now traced too.
    Fork = 1,
    /// A process called execve (sent for traced processes, and for all when names are watched).
    Exec = 2,
    /// The last thread of a traced process exited.
    Exit = 3,
}

impl TryFrom<u32> for ProcessEventKind {
    type Error = u32;

    fn try_from(value: u32) -> Result<Self, u32> {
        match value {
            1 => Ok(Self::Fork),
            2 => Ok(Self::Exec),
            3 => Ok(Self::Exit),
            other => Err(other),
        }
    }
}

/// A fork, exec or exit, sent through the `PROCESS_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// A [`ProcessEventKind`].
    pub kind: u32,
    /// The process (thread group id).
    pub tgid: u32,
    /// Fork: the parent's tgid. Otherwise 0.
    pub parent_tgid: u32,
    /// Exit: the exit code as `wait()` reports it. Otherwise 0.
    pub exit_code: i32,
    /// The `TRACED` byte of `tgid` after the event (0 when not traced).
    pub traced: u8,
    pub _pad: [u8; 7],
    /// When the event happened, `CLOCK_BOOTTIME` ns.
    pub time_ns: u64,
    /// When the process started, `CLOCK_BOOTTIME` ns (`task_struct.start_boottime`).
    pub start_boottime_ns: u64,
    /// The process's `comm` after the event.
    pub comm: [u8; 16],
    /// Exec: bytes of `args` filled.
    pub args_len: u32,
    pub _pad2: u32,
    /// Exec: the start of the new command line, arguments separated by NULs.
    pub args: [u8; ARGS_BYTES],
}

/// Bytes of command line an exec event carries.
pub const ARGS_BYTES: usize = 256;

const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 64 + ARGS_BYTES);
