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

/// `Array<[u8; 8]>`: per syscall number (eight per element) its `FileOp` (0: not file I/O).
pub const FILEIO_OPS: &str = "FILEIO_OPS";
/// `PerCpuHashMap<FileIoKey, FileIoStats>`.
pub const FILEIO_STATS: &str = "FILEIO_STATS";
/// `PerCpuHashMap<FileKey, FileStats>` (`--files`).
pub const FILE_STATS: &str = "FILE_STATS";
/// `HashMap<u64, BlockInflight>`: traced requests by `struct request` address.
pub const BLOCK_INFLIGHT: &str = "BLOCK_INFLIGHT";
/// `PerCpuHashMap<BlockKey, BlockStats>`.
pub const BLOCK_STATS: &str = "BLOCK_STATS";
/// `LruHashMap<u64, Owner>`: the traced process that last dirtied an inode's pages.
pub const WRITEBACK_OWNER: &str = "WRITEBACK_OWNER";
/// `HashMap<u32, Owner>`: flusher thread → owner of the inode it is writing back.
pub const FLUSHER_OWNER: &str = "FLUSHER_OWNER";

/// (process, file kind, op) pairs: a process uses at most 4 × 10 of them.
pub const FILEIO_STATS_ENTRIES: u32 = 8 * 1024;
/// (process, file) pairs for `--files`.
pub const FILE_STATS_ENTRIES: u32 = 16 * 1024;
/// Traced block requests in flight at once: an array of sets of `BLOCK_INFLIGHT_WAYS` entries,
/// the set chosen by the request's address (array lookups are inlined by the verifier; a hash
/// lookup costs ~50 ns three times per request). A request whose set is full of requests still
/// in flight is dropped and counted. 16K entries: far above any queue depth × hardware queues.
pub const BLOCK_INFLIGHT_ENTRIES: u32 = 16 * 1024;
/// Entries per set of `BLOCK_INFLIGHT`.
pub const BLOCK_INFLIGHT_WAYS: u32 = 4;
/// (process, device, op, flags, attribution) keys.
pub const BLOCK_STATS_ENTRIES: u32 = 4 * 1024;
/// Inodes whose dirtier is remembered (least recently dirtied forgotten first).
pub const WRITEBACK_OWNER_ENTRIES: u32 = 64 * 1024;
/// Flusher threads writing back at once.
pub const FLUSHER_OWNER_ENTRIES: u32 = 1024;

/// `LruHashMap<u64, SqlSock>`: the verdict on each socket of a traced process (by inode).
/// Least recently used sockets are forgotten first; a forgotten socket is only classified again.
pub const SQL_SOCKS: &str = "SQL_SOCKS";
/// `Array<u64>`: bitmap of the TCP server ports treated as SQL (65,536 bits).
pub const SQL_PORTS: &str = "SQL_PORTS";
/// Ring buffer of SQL events (`tracer_common::sql`).
pub const SQL_EVENTS: &str = "SQL_EVENTS";
/// `Array` of one scratch record per CPU.
pub const SQL_SCRATCH: &str = "SQL_SCRATCH";

/// Sockets whose verdict is remembered.
pub const SQL_SOCKS_ENTRIES: u32 = 64 * 1024;
/// Default bytes of `SQL_EVENTS` (the loader may set another size).
pub const SQL_EVENTS_BYTES: u32 = 16 * 1024 * 1024;
