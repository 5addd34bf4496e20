//! Reasons the kernel side could not record something. Each is counted, never silent.

/// Index into the `DROPS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A (process, syscall) pair could not be added: `SYSCALL_STATS` is full. The call is lost.
    SyscallStatsFull = 0,
    /// A process event (fork/exec/exit) did not fit in the `PROCESS_EVENTS` ring buffer. A fork's
    /// child is then not traced (nor its descendants): its map entries could never be reaped. A
    /// lost exec keeps the old name; a lost exit is noticed at the next interval (/proc).
    ProcessEventLost = 1,
    /// A syscall's latency could not be measured because another traced thread whose tid maps to
    /// the same in-flight slot overwrote its start time. The call is still counted.
    SyscallLatencyLost = 2,
    /// A tgid beyond the `TRACED` map (pid_max grew after start): that process is not traced.
    PidOutOfRange = 3,
    /// A (process, file kind, op) pair did not fit in `FILEIO_STATS`: those calls are lost.
    FileIoStatsFull = 4,
    /// A (process, file) pair did not fit in `FILE_STATS` (`--files`).
    FileStatsFull = 5,
    /// A traced block request could not be tracked (`BLOCK_INFLIGHT` full): it is lost.
    BlockInflightFull = 6,
    /// A (process, device, op) key did not fit in `BLOCK_STATS`: that request is lost.
    BlockStatsFull = 7,
    /// An inode's dirtier could not be remembered (`WRITEBACK_OWNER` full): its writeback is
    /// not attributed.
    WritebackOwnerFull = 8,
    /// A block request completed on an in-flight entry older than two minutes: a traced request
    /// that vanished left it; the completion is not charged.
    BlockStaleEntry = 9,
    /// A SQL event did not fit in the `SQL_EVENTS` ring buffer (user space fell behind). Its
    /// statement is lost; the parser resynchronizes on the connection's next messages.
    SqlEventLost = 10,
    /// A flusher thread's owner could not be remembered (`FLUSHER_OWNER` full): the requests it
    /// issues for that inode are not attributed to the process that dirtied it.
    FlusherOwnerFull = 11,
    /// A socket's SQL verdict could not be stored in `SQL_SOCKS` (an LRU map, which fails only
    /// when it cannot evict): the socket is classified again on its next message.
    SqlSocketMapFull = 12,
}

/// Number of entries in the `DROPS` array.
pub const DROP_REASONS: u32 = 13;

impl DropReason {
    /// All reasons, in index order.
    pub const ALL: [DropReason; DROP_REASONS as usize] = [
        DropReason::SyscallStatsFull,
        DropReason::ProcessEventLost,
        DropReason::SyscallLatencyLost,
        DropReason::PidOutOfRange,
        DropReason::FileIoStatsFull,
        DropReason::FileStatsFull,
        DropReason::BlockInflightFull,
        DropReason::BlockStatsFull,
        DropReason::WritebackOwnerFull,
        DropReason::BlockStaleEntry,
        DropReason::SqlEventLost,
        DropReason::FlusherOwnerFull,
        DropReason::SqlSocketMapFull,
    ];

    /// (tracer, reason) as written to the `drops` table.
    pub const fn describe(self) -> (&'static str, &'static str) {
        match self {
            DropReason::SyscallStatsFull => ("syscalls", "stats_map_full"),
            DropReason::ProcessEventLost => ("process", "event_ring_full"),
            DropReason::SyscallLatencyLost => ("syscalls", "latency_slot_collision"),
            DropReason::PidOutOfRange => ("process", "pid_beyond_pid_max"),
            DropReason::FileIoStatsFull => ("fileio", "stats_map_full"),
            DropReason::FileStatsFull => ("files", "stats_map_full"),
            DropReason::BlockInflightFull => ("blockio", "inflight_map_full"),
            DropReason::BlockStatsFull => ("blockio", "stats_map_full"),
            DropReason::WritebackOwnerFull => ("blockio", "writeback_owner_map_full"),
            DropReason::BlockStaleEntry => ("blockio", "stale_inflight_entry"),
            DropReason::SqlEventLost => ("sql", "event_ring_full"),
            DropReason::FlusherOwnerFull => ("blockio", "flusher_owner_map_full"),
            DropReason::SqlSocketMapFull => ("sql", "socket_map_full"),
        }
    }
}

// `ALL[i]` is the reason with index `i`: the user side reads the array by position.
const _: () = {
    let mut i = 0;
    while i < DropReason::ALL.len() {
        assert!(DropReason::ALL[i] as usize == i);
        i += 1;
    }
};

impl TryFrom<u32> for DropReason {
    type Error = u32;

    fn try_from(value: u32) -> Result<Self, u32> {
        DropReason::ALL.get(value as usize).copied().ok_or(value)
    }
}
