//! The socket capture's maps, event types, drops and configuration.
//!
//! The kernel side finds the connections of interest among the sockets of traced processes
//! (TCP by server port, Unix sockets by sniffing the first messages) and sends what each
//! send/receive syscall on them moved through the `SOCKET_EVENTS` ring buffer; user space
//! reassembles and parses the protocols (MySQL/MariaDB and PostgreSQL today).

/// `LruHashMap<u64, SocketVerdict>`: the verdict on each socket of a traced process (by inode).
/// Least recently used sockets are forgotten first; a forgotten socket is only classified again.
pub const SOCKET_VERDICTS: &str = "SOCKET_VERDICTS";
/// `Array<u64>`: bitmap of the TCP server ports whose connections are captured (65,536 bits).
pub const CAPTURE_PORTS: &str = "CAPTURE_PORTS";
/// Ring buffer of socket events ([`SocketEventHeader`] + data).
pub const SOCKET_EVENTS: &str = "SOCKET_EVENTS";
/// `Array` of one scratch record per CPU.
pub const SOCKET_SCRATCH: &str = "SOCKET_SCRATCH";
/// The read-only global holding [`SocketsConfig`].
pub const CONFIG: &str = "SOCKETS_CONFIG";

/// Sockets whose verdict is remembered.
pub const SOCKET_VERDICTS_ENTRIES: u32 = 64 * 1024;
/// Default bytes of `SOCKET_EVENTS` (the loader may set another size).
pub const SOCKET_EVENTS_BYTES: u32 = 16 * 1024 * 1024;

/// The capture's settings and the socket offsets it reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketsConfig {
    /// Bytes captured per send/receive syscall (a power of two ≤ `CAPTURE_MAX`).
    pub capture: u32,
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
}

const _: () = assert!(core::mem::size_of::<SocketsConfig>() == 60);

crate::drop_reasons! {
    /// What the socket capture can lose. (Written as the `sql` tracer's drops while SQL is the
    /// only protocol it captures.)
    pub enum SocketDrop for ("sql", "SOCKETS_DROPS") {
        /// An event did not fit in the `SOCKET_EVENTS` ring buffer (user space fell behind).
        /// Its statement is lost; the parser resynchronizes on the connection's next messages.
        EventLost = 0 => "event_ring_full",
        /// A socket's verdict could not be stored in `SOCKET_VERDICTS` (an LRU map, which fails
        /// only when it cannot evict): the socket is classified again on its next message.
        VerdictMapFull = 1 => "socket_map_full",
    }
}

crate::pod!(SocketsConfig, SocketEventHeader, ConnInfo, SocketVerdict);

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
}

/// The wire protocol the kernel side recognized.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Unknown = 0,
    Mysql = 1,
    Postgres = 2,
}

impl TryFrom<u8> for Protocol {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Protocol::Unknown),
            1 => Ok(Protocol::Mysql),
            2 => Ok(Protocol::Postgres),
            other => Err(other),
        }
    }
}

/// Direction of a data event, from the traced (client) process's point of view.
pub const DIR_SENT: u8 = 0;
pub const DIR_RECEIVED: u8 = 1;

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

const _: () = assert!(core::mem::size_of::<SocketEventHeader>() == 40);

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
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<SocketVerdict>() == 8);

pub const SOCK_PENDING: u8 = 0;
pub const SOCK_CAPTURE: u8 = 1;
pub const SOCK_OTHER: u8 = 2;
