//! Which processes are traced, and the events that change that.
//!
//! The `TRACED` map holds one byte per tgid: bit 0 says "traced", bits 1–7 a generation that
//! changes each time a tgid starts being traced. Syscall and I/O keys carry the generation, so
//! counts of a process that ended and a new one that reused its PID are never merged. Eight bytes
//! share one array element because the kernel rounds array elements up to 8 bytes.

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
