//! The file I/O tracer's maps, types, drops and configuration (`fileio` table), and those of
//! bytes per file (`files` table, `--files`), which the same kernel module counts.

use crate::hist::BUCKETS;

/// `PerCpuHashMap<FileIoKey, FileIoStats>`.
pub const FILEIO_STATS: &str = "FILEIO_STATS";
/// `PerCpuHashMap<FileKey, FileStats>` (`--files`).
pub const FILE_STATS: &str = "FILE_STATS";
/// The read-only global holding [`FileIoConfig`].
pub const CONFIG: &str = "FILEIO_CONFIG";

/// (process, file kind, op) pairs: a process uses at most 4 × 10 of them.
pub const FILEIO_STATS_ENTRIES: u32 = 8 * 1024;
/// (process, file) pairs for `--files`.
pub const FILE_STATS_ENTRIES: u32 = 16 * 1024;

/// Offsets `--files` needs beyond the dispatch's walk to the inode: the file's name and device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileIoConfig {
    pub file_dentry_offset: u32,
    pub dentry_name_offset: u32,
    pub inode_sb_offset: u32,
    pub sb_dev_offset: u32,
}

const _: () = assert!(core::mem::size_of::<FileIoConfig>() == 16);

crate::drop_reasons! {
    /// What the file I/O tracer can lose.
    pub enum FileIoDrop for ("fileio", "FILEIO_DROPS") {
        /// A (process, file kind, op) pair did not fit in `FILEIO_STATS`: those calls are lost.
        StatsFull = 0 => "stats_map_full",
    }
}

crate::drop_reasons! {
    /// What `--files` can lose.
    pub enum FilesDrop for ("files", "FILES_DROPS") {
        /// A (process, file) pair did not fit in `FILE_STATS`.
        StatsFull = 0 => "stats_map_full",
    }
}

crate::pod!(FileIoConfig, FileIoKey, FileIoStats, FileKey, FileStats);

/// What kind of file a descriptor refers to (from the inode's mode).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File = 0,
    Socket = 1,
    Pipe = 2,
    Other = 3,
}

impl FileKind {
    /// From `inode.i_mode`.
    #[inline(always)]
    pub const fn from_mode(mode: u16) -> FileKind {
        match mode & 0o170000 {
            0o100000 => FileKind::File,
            0o140000 => FileKind::Socket,
            0o010000 => FileKind::Pipe,
            _ => FileKind::Other,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Socket => "socket",
            FileKind::Pipe => "pipe",
            FileKind::Other => "other",
        }
    }
}

impl TryFrom<u8> for FileKind {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(FileKind::File),
            1 => Ok(FileKind::Socket),
            2 => Ok(FileKind::Pipe),
            3 => Ok(FileKind::Other),
            other => Err(other),
        }
    }
}

/// The syscall families the file I/O tracer counts. `FILEIO_OPS` maps syscall numbers to these
/// (0: not file I/O).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    Read = 1,
    Write = 2,
    Recv = 3,
    Send = 4,
    Sendfile = 5,
    Splice = 6,
    CopyFileRange = 7,
    Fsync = 8,
    Fdatasync = 9,
    SyncFileRange = 10,
}

impl FileOp {
    pub const ALL: [FileOp; 10] = [
        FileOp::Read,
        FileOp::Write,
        FileOp::Recv,
        FileOp::Send,
        FileOp::Sendfile,
        FileOp::Splice,
        FileOp::CopyFileRange,
        FileOp::Fsync,
        FileOp::Fdatasync,
        FileOp::SyncFileRange,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            FileOp::Read => "read",
            FileOp::Write => "write",
            FileOp::Recv => "recv",
            FileOp::Send => "send",
            FileOp::Sendfile => "sendfile",
            FileOp::Splice => "splice",
            FileOp::CopyFileRange => "copy_file_range",
            FileOp::Fsync => "fsync",
            FileOp::Fdatasync => "fdatasync",
            FileOp::SyncFileRange => "sync_file_range",
        }
    }

    /// The descriptor kind a syscall implies by its nature, if any.
    pub fn implied_kind(name: &str) -> Option<FileKind> {
        match name {
            "pread64" | "pwrite64" | "preadv" | "pwritev" | "preadv2" | "pwritev2"
            | "copy_file_range" | "sync_file_range" | "sync_file_range2" | "fsync"
            | "fdatasync" => Some(FileKind::File),
            "recvfrom" | "recvmsg" | "recvmmsg" | "sendto" | "sendmsg" | "sendmmsg" => {
                Some(FileKind::Socket)
            }
            _ => None,
        }
    }

    /// The family of a syscall, by name.
    pub fn of_syscall(name: &str) -> Option<FileOp> {
        Some(match name {
            "read" | "pread64" | "readv" | "preadv" | "preadv2" => FileOp::Read,
            "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" => FileOp::Write,
            "recvfrom" | "recvmsg" | "recvmmsg" => FileOp::Recv,
            "sendto" | "sendmsg" | "sendmmsg" => FileOp::Send,
            "sendfile" => FileOp::Sendfile,
            "splice" | "tee" | "vmsplice" => FileOp::Splice,
            "copy_file_range" => FileOp::CopyFileRange,
            "fsync" => FileOp::Fsync,
            "fdatasync" => FileOp::Fdatasync,
            "sync_file_range" | "sync_file_range2" => FileOp::SyncFileRange,
            _ => return None,
        })
    }
}

impl TryFrom<u8> for FileOp {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        FileOp::ALL.iter().copied().find(|o| *o as u8 == v).ok_or(v)
    }
}

/// Key of `FILEIO_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileIoKey {
    pub tgid: u32,
    pub generation: u32,
    /// A [`FileKind`].
    pub kind: u8,
    /// A [`FileOp`].
    pub op: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<FileIoKey>() == 12);

/// Value of `FILEIO_STATS`, one per CPU; only grows. Latency as in the syscall tracer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIoStats {
    pub calls: u64,
    pub errors: u64,
    /// Bytes moved (positive return values).
    pub bytes: u64,
    pub timed_calls: u64,
    pub duration_ns: u64,
    pub hist: [u32; BUCKETS],
}

const _: () = assert!(core::mem::size_of::<FileIoStats>() == 40 + 4 * BUCKETS);

impl FileIoStats {
    pub const ZERO: FileIoStats = FileIoStats {
        calls: 0,
        errors: 0,
        bytes: 0,
        timed_calls: 0,
        duration_ns: 0,
        hist: [0; BUCKETS],
    };
}

/// Key of `FILE_STATS` (`--files`): one file of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub tgid: u32,
    pub generation: u32,
    pub ino: u64,
    /// `super_block.s_dev` (kernel encoding).
    pub dev: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<FileKey>() == 24);

/// Bytes of a file's name kept by the kernel side.
pub const FILE_NAME_BYTES: usize = 48;

/// Value of `FILE_STATS`, one per CPU; only grows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStats {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
    /// The last descriptor used for it (to find the path in /proc/PID/fd).
    pub fd: u32,
    pub _pad: u32,
    /// The dentry name (basename), NUL-padded, set when the entry is created.
    pub name: [u8; FILE_NAME_BYTES],
}

const _: () = assert!(core::mem::size_of::<FileStats>() == 40 + FILE_NAME_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_map_to_kinds() {
        assert_eq!(FileKind::from_mode(0o100644), FileKind::File);
        assert_eq!(FileKind::from_mode(0o140777), FileKind::Socket);
        assert_eq!(FileKind::from_mode(0o010600), FileKind::Pipe);
        assert_eq!(FileKind::from_mode(0o020620), FileKind::Other);
    }

    #[test]
    fn ops_round_trip() {
        for op in FileOp::ALL {
            assert_eq!(FileOp::try_from(op as u8), Ok(op));
        }
        assert_eq!(FileOp::of_syscall("pwritev2"), Some(FileOp::Write));
        assert_eq!(FileOp::of_syscall("getppid"), None);
    }
}
