//! The socket capture's maps, event types, drops and configuration.
//!
//! The kernel side finds the connections of interest among the sockets of traced processes
//! (TCP by server port, Unix sockets by sniffing the first messages) and sends what each
//! send/receive syscall on them moved through the `SOCKET_EVENTS` ring buffer; user space
//! reassembles and parses the protocols (MySQL/MariaDB and PostgreSQL today).

/// `LruHashMap<u64, SocketVerdict>`: the verdict on each socket of a traced process (by inode).
/// Least recently used sockets are forgotten first; a forgotten socket is only classified again.
pub const SOCKET_VERDICTS: &str = "SOCKET_VERDICTS";
/// `Array<[u8; 8]>`: per TCP server port (eight per element), the [`Protocol`] its connections
/// are captured as (0: not by port), or [`PORT_SQL`].
pub const CAPTURE_PORTS: &str = "CAPTURE_PORTS";
/// `Array<ThreadSyscalls>`: per thread (by `tid & mask`), the syscalls it made while traced, so
/// that user space can tell how many a request cost its serving thread.
pub const THREAD_SYSCALLS: &str = "THREAD_SYSCALLS";
/// A `CAPTURE_PORTS` value: a SQL port of either protocol (told apart by the first bytes).
pub const PORT_SQL: u8 = 0xff;
/// Ring buffer of socket events ([`SocketEventHeader`] + data).
pub const SOCKET_EVENTS: &str = "SOCKET_EVENTS";
/// `Array` of one scratch record per CPU.
pub const SOCKET_SCRATCH: &str = "SOCKET_SCRATCH";
/// The read-only global holding [`SocketsConfig`].
pub const CONFIG: &str = "SOCKETS_CONFIG";

/// Sockets whose verdict is remembered.
pub const SOCKET_VERDICTS_ENTRIES: u32 = 64 * 1024;
/// Default bytes of `SOCKET_EVENTS` (the loader may set another size).
pub const SOCKET_EVENTS_BYTES: u32 = 8 * 1024 * 1024;

/// The capture's settings and the socket offsets it reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketsConfig {
    /// Bytes captured per send/receive syscall (a power of two ≤ `CAPTURE_MAX`).
    pub capture: u32,
    /// Bytes captured per syscall on HTTP and uwsgi connections (headers are all the parser
    /// needs; bodies are skipped by length).
    pub capture_http: u32,
    /// Sniff the first messages of sockets for MySQL/PostgreSQL (1) and HTTP/uwsgi requests (1).
    pub sniff_sql: u32,
    pub sniff_http: u32,
    /// Sniff for an AMQP 0-9-1 connection start (1) and memcached requests (1) on sockets not
    /// captured by port.
    pub sniff_amqp: u32,
    pub sniff_cache: u32,
    /// Count each traced thread's syscalls in `THREAD_SYSCALLS` and stamp events with it.
    pub thread_syscalls: u32,
    /// `THREAD_SYSCALLS` has `thread_mask + 1` entries (a power of two).
    pub thread_mask: u32,
    /// Bytes waiting in `SOCKET_EVENTS` past which a record wakes the reader; below, the reader
    /// polls (a wakeup per send/receive would cost the traced client more than the capture).
    pub wakeup_bytes: u32,
    /// file.private_data (struct socket *), socket.sk, sock_common's family, ports and
    /// addresses, and for Unix sockets unix_sock.peer, unix_sock.addr, unix_address.len/name.
    pub file_private_data_offset: u32,
    pub socket_sk_offset: u32,
    pub sk_family_offset: u32,
    pub sk_dport_offset: u32,
    pub sk_num_offset: u32,
    pub sk_daddr_offset: u32,
    pub sk_rcv_saddr_offset: u32,
    pub sk_v6_daddr_offset: u32,
    pub sk_v6_rcv_saddr_offset: u32,
    pub unix_peer_offset: u32,
    pub unix_addr_offset: u32,
    pub unix_address_len_offset: u32,
    pub unix_address_name_offset: u32,
    /// sock.sk_type (SOCK_STREAM 1): datagram sockets (a logger's, say) are never captured.
    pub sk_type_offset: u32,
}

const _: () = assert!(core::mem::size_of::<SocketsConfig>() == 92);

crate::drop_reasons! {
    /// What the socket capture can lose (for every protocol it captures).
    pub enum SocketDrop for ("sockets", "SOCKETS_DROPS") {
        /// An event did not fit in the `SOCKET_EVENTS` ring buffer (user space fell behind).
        /// Its statement is lost; the parser resynchronizes on the connection's next messages.
        EventLost = 0 => "event_ring_full",
        /// A socket's verdict could not be stored in `SOCKET_VERDICTS` (an LRU map, which evicts
        /// rather than fails when full: only an update the kernel could not make, bucket lock busy
        /// or no node to take): the socket is classified again on its next message, as an evicted
        /// one is.
        VerdictMapFull = 1 => "socket_map_full",
        /// A SQL send of a CPython process whose sending thread was not among the first
        /// `PY_THREADS_MAX` thread states of its interpreter (or the walk could not read them):
        /// the statement has no call site.
        PythonThreadNotFound = 2 => "python_thread_not_found",
        /// A send's Python stack did not fit in the `SOCKET_EVENTS` ring buffer: its statement
        /// is still counted (its data is a separate event), without a call site.
        PythonStackLost = 3 => "python_stack_ring_full",
    }
}

crate::pod!(
    SocketsConfig,
    SocketEventHeader,
    ConnInfo,
    SocketVerdict,
    ThreadSyscalls
);

/// Value of `THREAD_SYSCALLS`: a thread's syscall count (a slot whose tid differs belongs to
/// another thread and starts over).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadSyscalls {
    pub tid: u32,
    pub _pad: u32,
    pub calls: u64,
}

const _: () = assert!(core::mem::size_of::<ThreadSyscalls>() == 16);

/// Largest capture per syscall, and the scratch buffer's half size (a power of two).
pub const CAPTURE_MAX: u32 = 16 * 1024;

/// Bytes of the event header before the captured data.
pub const HEADER_BYTES: usize = core::mem::size_of::<SocketEventHeader>();

/// What an event carries.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes a syscall moved on a captured connection (followed by up to `captured` of them).
    Data = 1,
    /// A connection was recognized (followed by a [`ConnInfo`]).
    Connection = 2,
    /// The traced process closed a captured connection (no data follows).
    Close = 3,
    /// The Python stack of a SQL client's send, before its Data event (followed by a
    /// [`crate::python::PyStackBody`] cut after its `depth` frames).
    PyStack = 4,
}

/// The wire protocol the kernel side recognized.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Unknown = 0,
    Mysql = 1,
    Postgres = 2,
    /// HTTP/1.x.
    Http = 3,
    /// The uwsgi binary protocol (requests; the responses are HTTP).
    Uwsgi = 4,
    /// AMQP 0-9-1.
    Amqp = 5,
    Memcached = 6,
}

impl TryFrom<u8> for Protocol {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Protocol::Unknown),
            1 => Ok(Protocol::Mysql),
            2 => Ok(Protocol::Postgres),
            3 => Ok(Protocol::Http),
            4 => Ok(Protocol::Uwsgi),
            5 => Ok(Protocol::Amqp),
            6 => Ok(Protocol::Memcached),
            other => Err(other),
        }
    }
}

/// Direction of a data event, from the traced process's point of view.
pub const DIR_SENT: u8 = 0;
pub const DIR_RECEIVED: u8 = 1;

/// Which end of the connection the traced process is.
pub const SIDE_CLIENT: u8 = 0;
/// It received the first request (it accepted the connection: a server).
pub const SIDE_SERVER: u8 = 1;

/// Header of every `SOCKET_EVENTS` record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEventHeader {
    /// A [`EventKind`].
    pub kind: u8,
    /// [`DIR_SENT`] or [`DIR_RECEIVED`].
    pub direction: u8,
    /// A [`Protocol`].
    pub protocol: u8,
    /// AF_INET (2), AF_INET6 (10) or AF_UNIX (1).
    pub family: u8,
    pub tgid: u32,
    pub generation: u32,
    /// The thread that made the syscall.
    pub tid: u32,
    /// The connection: the socket's inode number.
    pub conn: u64,
    /// When the syscall returned (CLOCK_MONOTONIC ns).
    pub time_ns: u64,
    /// Bytes the syscall moved.
    pub len: u32,
    /// Bytes of them that follow the header (the first ones, up to the capture size).
    pub captured: u32,
    /// [`SIDE_CLIENT`] or [`SIDE_SERVER`].
    pub side: u8,
    pub _pad: [u8; 7],
    /// The thread's syscall count (`THREAD_SYSCALLS`) after this syscall; 0 when not counted.
    pub thread_syscalls: u64,
}

const _: () = assert!(core::mem::size_of::<SocketEventHeader>() == 56);

/// Bytes of a Unix socket path (sun_path).
pub const UNIX_PATH_BYTES: usize = 108;

/// Endpoints of a recognized connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
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

const _: () = assert!(core::mem::size_of::<ConnInfo>() == 8 + 32 + UNIX_PATH_BYTES);

/// Value of `SOCKET_VERDICTS` (keyed by socket inode): what the kernel side decided about a socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketVerdict {
    /// [`SOCK_PENDING`], [`SOCK_CAPTURE`] or [`SOCK_OTHER`].
    pub class: u8,
    pub protocol: u8,
    /// Syscalls sniffed so far without a verdict.
    pub tries: u8,
    pub family: u8,
    /// [`SIDE_CLIENT`] or [`SIDE_SERVER`].
    pub side: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<SocketVerdict>() == 8);

pub const SOCK_PENDING: u8 = 0;
pub const SOCK_CAPTURE: u8 = 1;
pub const SOCK_OTHER: u8 = 2;
