//! The SQL tracer's map and event types.
//!
//! The kernel side finds SQL connections among the sockets of traced processes (TCP by server
//! port, Unix sockets by sniffing the first messages) and sends what each send/receive syscall on
//! them moved through the `SQL_EVENTS` ring buffer; user space reassembles and parses the
//! MySQL/MariaDB and PostgreSQL protocols.

/// Largest capture per syscall, and the scratch buffer's half size (a power of two).
pub const SQL_CAPTURE_MAX: u32 = 16 * 1024;

/// Bytes of the event header before the captured data.
pub const SQL_HEADER_BYTES: usize = core::mem::size_of::<SqlEventHeader>();

/// What an event carries.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlEventKind {
    /// Bytes a syscall moved on a SQL connection (followed by up to `captured` of them).
    Data = 1,
    /// A connection was recognized (followed by a [`SqlConnInfo`]).
    Connection = 2,
}

/// The wire protocol the kernel side recognized.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlProtocol {
    Unknown = 0,
    Mysql = 1,
    Postgres = 2,
}

impl TryFrom<u8> for SqlProtocol {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(SqlProtocol::Unknown),
            1 => Ok(SqlProtocol::Mysql),
            2 => Ok(SqlProtocol::Postgres),
            other => Err(other),
        }
    }
}

/// Direction of a data event, from the traced (client) process's point of view.
pub const DIR_SENT: u8 = 0;
pub const DIR_RECEIVED: u8 = 1;

/// Header of every `SQL_EVENTS` record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlEventHeader {
    /// A [`SqlEventKind`].
    pub kind: u8,
    /// [`DIR_SENT`] or [`DIR_RECEIVED`].
    pub direction: u8,
    /// A [`SqlProtocol`].
    pub protocol: u8,
    /// AF_INET (2), AF_INET6 (10) or AF_UNIX (1).
    pub family: u8,
    pub tgid: u32,
    pub generation: u32,
    pub _pad: u32,
    /// The connection: the socket's inode number.
    pub conn: u64,
    /// When the syscall returned (CLOCK_MONOTONIC ns).
    pub time_ns: u64,
    /// Bytes the syscall moved.
    pub len: u32,
    /// Bytes of them that follow the header (the first ones, up to the capture size).
    pub captured: u32,
}

const _: () = assert!(core::mem::size_of::<SqlEventHeader>() == 40);

/// Bytes of a Unix socket path (sun_path).
pub const UNIX_PATH_BYTES: usize = 108;

/// Endpoints of a recognized connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlConnInfo {
    /// Server port (host order); 0 for Unix sockets.
    pub server_port: u16,
    /// Client port (host order); 0 for Unix sockets.
    pub client_port: u16,
    pub _pad: u32,
    /// Server and client addresses: IPv4 in the first 4 bytes, or IPv6.
    pub server_addr: [u8; 16],
    pub client_addr: [u8; 16],
    /// Unix sockets: the server's socket path, NUL-padded.
    pub path: [u8; UNIX_PATH_BYTES],
}

const _: () = assert!(core::mem::size_of::<SqlConnInfo>() == 8 + 32 + UNIX_PATH_BYTES);

/// Value of `SQL_SOCKS` (keyed by socket inode): what the kernel side decided about a socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlSock {
    /// [`SOCK_PENDING`], [`SOCK_SQL`] or [`SOCK_OTHER`].
    pub class: u8,
    pub protocol: u8,
    /// Syscalls sniffed so far without a verdict.
    pub tries: u8,
    pub family: u8,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<SqlSock>() == 8);

pub const SOCK_PENDING: u8 = 0;
pub const SOCK_SQL: u8 = 1;
pub const SOCK_OTHER: u8 = 2;

/// Buffer shapes of send/receive syscalls (bits 8-10 of a `FILEIO_OPS` class).
pub mod shape {
    pub const SHIFT: u16 = 8;
    pub const MASK: u16 = 0x0700;
    /// No user buffer (sendfile, splice, fsync…).
    pub const NONE: u16 = 0;
    /// `(fd, buf, len)`: read, write, pread64, pwrite64, recvfrom, sendto.
    pub const CONTIGUOUS: u16 = 1;
    /// `(fd, iov, iovcnt)`: readv, writev and friends.
    pub const IOVEC: u16 = 2;
    /// `(fd, msghdr, flags)`: recvmsg, sendmsg.
    pub const MSGHDR: u16 = 3;
    /// `(fd, mmsghdr, vlen)`: recvmmsg, sendmmsg (the first message).
    pub const MMSGHDR: u16 = 4;

    /// The shape of a syscall, by name.
    pub fn of_syscall(name: &str) -> u16 {
        match name {
            "read" | "write" | "pread64" | "pwrite64" | "recvfrom" | "sendto" => CONTIGUOUS,
            "readv" | "writev" | "preadv" | "pwritev" | "preadv2" | "pwritev2" => IOVEC,
            "recvmsg" | "sendmsg" => MSGHDR,
            "recvmmsg" | "sendmmsg" => MMSGHDR,
            _ => NONE,
        }
    }
}
