//! The socket capture's hooks (called by [`crate::dispatch`]: at sys_exit for send/receive
//! syscalls on sockets, at sys_enter for close). For every send/receive of a traced process,
//! decide once per socket whether its traffic is captured, then copy what the syscall moved, up
//! to the capture size, into `SOCKET_EVENTS`. Parsing happens in user space.
//!
//! The verdict: a TCP connection to a server port in `CAPTURE_PORTS` is captured as that port's
//! protocol (the traced process is its client); otherwise the first messages decide — a request
//! the process *received* (an HTTP request line, a uwsgi packet) makes it the server of an HTTP
//! or uwsgi connection, a request it *sent* its client; on Unix sockets MySQL and PostgreSQL are
//! recognized by their first messages too. A socket that shows none of these within a few
//! messages is left alone. Closing a captured socket sends a Close event (the end of a response
//! delimited by the connection's close) and forgets its verdict.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::{bpf_probe_read_user, bpf_ringbuf_output, bpf_ringbuf_query},
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    dispatch::{SHAPE_MASK, SHAPE_SHIFT, shape},
    drops::Reasons as _,
    fileio::{FileKind, FileOp},
    sockets::{
        CAPTURE_MAX, ConnInfo, DIR_RECEIVED, DIR_SENT, EventKind, HEADER_BYTES, PORT_SQL, Protocol,
        SIDE_CLIENT, SIDE_SERVER, SOCK_CAPTURE, SOCK_OTHER, SOCK_PENDING, SOCKET_EVENTS_BYTES,
        SOCKET_VERDICTS_ENTRIES, SocketDrop, SocketEventHeader, SocketVerdict, SocketsConfig,
        ThreadSyscalls, UNIX_PATH_BYTES,
    },
};

use crate::{
    dispatch::{self, Call},
    kernel::{config_global, count_drop, read_at, read_ptr, setting},
};

config_global!(SOCKETS_CONFIG: SocketsConfig);

#[map]
pub(crate) static SOCKET_VERDICTS: LruHashMap<u64, SocketVerdict> =
    LruHashMap::with_max_entries(SOCKET_VERDICTS_ENTRIES, 0);

#[map]
static CAPTURE_PORTS: Array<[u8; 8]> = Array::with_max_entries(65536 / 8, 0);

/// Sized by the loader to `thread_mask + 1` entries.
#[map]
static THREAD_SYSCALLS: Array<ThreadSyscalls> = Array::with_max_entries(1, 0);

#[map]
pub(crate) static SOCKET_EVENTS: RingBuf = RingBuf::with_byte_size(SOCKET_EVENTS_BYTES, 0);

#[map]
static SOCKETS_DROPS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(SocketDrop::ALL.len() as u32, 0);

#[inline(always)]
pub(crate) fn dropped(reason: SocketDrop) {
    count_drop(&SOCKETS_DROPS, reason.index());
}

const CAP: usize = CAPTURE_MAX as usize;
pub(crate) const SCRATCH_BYTES: usize = HEADER_BYTES + 2 * CAP;

/// One scratch record per CPU (an array indexed by CPU: per-CPU maps cap values at 32 KiB).
/// The loader sizes it to the number of possible CPUs.
#[map]
pub(crate) static SOCKET_SCRATCH: Array<[u8; SCRATCH_BYTES]> = Array::with_max_entries(1, 0);

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Messages sniffed on a socket before it is declared not of interest.
const MAX_TRIES: u8 = 4;
/// Bytes a pending socket's message is sniffed on.
const SNIFF_BYTES: u32 = 8;

/// Counts a syscall of a traced thread; returns its count so far (0 when not counting).
#[inline(always)]
pub fn count_syscall(tid: u32) -> u64 {
    if setting!(SOCKETS_CONFIG.thread_syscalls) == 0 {
        return 0;
    }
    let Some(slot) = THREAD_SYSCALLS.get_ptr_mut(tid & setting!(SOCKETS_CONFIG.thread_mask)) else {
        return 0;
    };
    // SAFETY: valid map memory; a thread runs on one CPU at a time. A colliding tid resets the
    // slot, which user space sees as a count that went back.
    unsafe {
        if (*slot).tid != tid {
            (*slot).tid = tid;
            (*slot).calls = 0;
        }
        (*slot).calls += 1;
        (*slot).calls
    }
}

/// A traced thread's syscall count so far (0 when not counting, or its slot was taken).
#[inline(always)]
fn syscalls_so_far(tid: u32) -> u64 {
    if setting!(SOCKETS_CONFIG.thread_syscalls) == 0 {
        return 0;
    }
    match THREAD_SYSCALLS.get(tid & setting!(SOCKETS_CONFIG.thread_mask)) {
        Some(slot) if slot.tid == tid => slot.calls,
        _ => 0,
    }
}

/// At sys_enter of `close(fd)` by a traced thread: a captured connection ends.
#[inline(always)]
pub fn on_close(tgid: u32, generation: u32, tid: u32, fd: u32) {
    let Some((_, inode)) = dispatch::resolve(fd) else {
        return;
    };
    let Some(ino) = read_at::<u64>(inode, dispatch::inode_ino_offset()) else {
        return;
    };
    // SAFETY: a copy out of the map value.
    let Some(verdict) = (unsafe { SOCKET_VERDICTS.get(ino) }).copied() else {
        return;
    };
    let _ = SOCKET_VERDICTS.remove(ino);
    if verdict.class != SOCK_CAPTURE {
        return;
    }
    let header = SocketEventHeader {
        kind: EventKind::Close as u8,
        direction: 0,
        protocol: verdict.protocol,
        family: verdict.family,
        tgid,
        generation,
        tid,
        conn: ino,
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        len: 0,
        captured: 0,
        side: verdict.side,
        _pad: [0; 7],
        thread_syscalls: syscalls_so_far(tid),
    };
    if SOCKET_EVENTS
        .output::<SocketEventHeader>(header, wakeup_flag())
        .is_err()
    {
        dropped(SocketDrop::EventLost);
    }
}

/// A send or receive by a traced process on a socket.
#[inline(always)]
pub fn on_exit(call: &Call) {
    if call.kind != FileKind::Socket {
        return;
    }
    let (Some(file), Some(inode)) = (call.file, call.inode) else {
        return;
    };
    let buffer_shape = (call.class & SHAPE_MASK) >> SHAPE_SHIFT;
    if buffer_shape == shape::NONE || call.ret <= 0 {
        return;
    }
    let sending = call.op == FileOp::Write as u8 || call.op == FileOp::Send as u8;
    let Some(ino) = read_at::<u64>(inode, dispatch::inode_ino_offset()) else {
        return;
    };
    // SAFETY: a copy out of the map value.
    let known = unsafe { SOCKET_VERDICTS.get(ino) }.copied();
    if known.is_some_and(|s| s.class == SOCK_OTHER) {
        return;
    }
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SOCKET_SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    let scratch = scratch as *mut u8;
    let mut sock = match known {
        Some(s) => s,
        None => SocketVerdict {
            class: SOCK_PENDING,
            protocol: Protocol::Unknown as u8,
            tries: 0,
            family: 0,
            side: SIDE_CLIENT,
            _pad: [0; 3],
        },
    };
    let pending = sock.class == SOCK_PENDING;
    if pending {
        // Only the first bytes decide: a socket left alone costs an 8-byte copy, not a capture.
        let (len, copied) = capture(scratch, buffer_shape, call, SNIFF_BYTES);
        classify(&mut sock, file, scratch, copied, len, sending);
        if SOCKET_VERDICTS.insert(ino, sock, 0).is_err() {
            dropped(SocketDrop::VerdictMapFull);
        }
        if sock.class != SOCK_CAPTURE {
            return;
        }
    }
    let http = sock.protocol == Protocol::Http as u8 || sock.protocol == Protocol::Uwsgi as u8;
    let limit = if http {
        setting!(SOCKETS_CONFIG.capture_http)
    } else {
        setting!(SOCKETS_CONFIG.capture)
    };
    let (len, copied) = capture(scratch, buffer_shape, call, limit);
    if pending {
        emit_connection(call, ino, &sock, file, scratch);
    }
    emit_data(call, ino, &sock, sending, len, copied, scratch);
}

/// Copies up to the capture size of what the syscall moved into the scratch data area.
/// Returns (bytes moved, bytes copied).
#[inline(always)]
fn capture(scratch: *mut u8, buffer_shape: u32, call: &Call, limit: u32) -> (u32, u32) {
    let mut len = call.ret as u64;
    let arg1 = dispatch::arg(call, 1);
    let arg2 = dispatch::arg(call, 2);
    let (iov, iov_count) = match buffer_shape {
        shape::CONTIGUOUS => {
            let limit = u64::from(limit).min(len);
            let n = copy_user(scratch, 0, arg1, limit);
            return (len as u32, n);
        }
        shape::IOVEC => (arg1, arg2),
        shape::MSGHDR | shape::MMSGHDR => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24; struct mmsghdr adds msg_len
            // at 56 (what the first message moved; the syscall returns a message count).
            let msg = arg1 as *const u8;
            if buffer_shape == shape::MMSGHDR {
                len = read_user::<u32>(msg, 56).unwrap_or(0) as u64;
            }
            (
                read_user::<u64>(msg, 16).unwrap_or(0),
                read_user::<u64>(msg, 24).unwrap_or(0),
            )
        }
        _ => return (len as u32, 0),
    };
    let limit = u64::from(limit).min(len);
    let mut copied: u32 = 0;
    for i in 0..4u64 {
        if i >= iov_count || copied as u64 >= limit {
            break;
        }
        let entry = (iov + 16 * i) as *const u8;
        let (Some(base), Some(size)) = (read_user::<u64>(entry, 0), read_user::<u64>(entry, 8))
        else {
            break;
        };
        let want = size.min(limit - copied as u64);
        copied += copy_user(scratch, copied, base, want);
    }
    (len as u32, copied)
}

/// Copies `n` bytes of user memory at `src` to the scratch data area at `offset`.
#[inline(always)]
fn copy_user(scratch: *mut u8, offset: u32, src: u64, n: u64) -> u32 {
    let offset = (offset as usize) & (CAP - 1);
    // Opaque to LLVM, so the clamp below stays a compare with a constant: where the caller's
    // `min` already bounds n, LLVM drops the clamp, and the 5.10/6.1 verifiers (which learn no bound
    // from comparing two registers) then refuses the helper's size as possibly negative.
    // SAFETY: a read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = if n > CAP as u64 { CAP } else { n as usize };
    if n == 0 {
        return 0;
    }
    // SAFETY: offset < CAP and n ≤ CAP, so the write stays inside the 2·CAP data area; the helper
    // reads user memory through a fault-safe path.
    let r = unsafe {
        bpf_probe_read_user(
            scratch.add(HEADER_BYTES + offset) as *mut core::ffi::c_void,
            n as u32,
            src as *const core::ffi::c_void,
        )
    };
    if r == 0 { n as u32 } else { 0 }
}

#[inline(always)]
fn read_user<T>(base: *const u8, offset: usize) -> Option<T> {
    // SAFETY: a fault-safe copy of user memory.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(base.wrapping_add(offset) as *const T).ok() }
}

/// The first captured bytes.
#[inline(always)]
fn head(scratch: *mut u8) -> [u8; 8] {
    // SAFETY: the header and the first 8 data bytes are inside the scratch record.
    unsafe { core::ptr::read_unaligned(scratch.add(HEADER_BYTES) as *const [u8; 8]) }
}

/// Decides what a pending socket is.
#[inline(always)]
fn classify(
    sock: &mut SocketVerdict,
    file: *const u8,
    scratch: *mut u8,
    copied: u32,
    len: u32,
    sending: bool,
) {
    let sk = sock_of(file);
    let Some(sk) = sk else {
        sock.class = SOCK_OTHER;
        return;
    };
    let family = read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_family_offset)).unwrap_or(0);
    sock.family = family as u8;
    // The protocols captured are all byte streams.
    const SOCK_STREAM: u16 = 1;
    if read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_type_offset)) != Some(SOCK_STREAM) {
        sock.class = SOCK_OTHER;
        return;
    }
    let (sql, http, client) = if copied >= 8 {
        let b = head(scratch);
        (
            sniff_sql(b, len, sending),
            sniff_http(b, len, sending),
            sniff_client(b, sending),
        )
    } else {
        (
            Protocol::Unknown,
            (Protocol::Unknown, SIDE_CLIENT),
            Protocol::Unknown,
        )
    };
    let by_port = match family {
        AF_INET | AF_INET6 => {
            let port = peer_port(sk);
            port_protocol(port)
        }
        AF_UNIX => 0,
        _ => {
            sock.class = SOCK_OTHER;
            return;
        }
    };
    if by_port != 0 {
        // A server port of interest: the traced process is the client.
        sock.class = SOCK_CAPTURE;
        sock.side = SIDE_CLIENT;
        sock.protocol = if by_port == PORT_SQL
            || by_port == Protocol::Mysql as u8
            || by_port == Protocol::Postgres as u8
        {
            if sql != Protocol::Unknown {
                sql as u8
            } else if by_port == PORT_SQL {
                Protocol::Unknown as u8
            } else {
                by_port
            }
        } else {
            by_port
        };
        return;
    }
    if http.0 != Protocol::Unknown {
        sock.class = SOCK_CAPTURE;
        sock.protocol = http.0 as u8;
        sock.side = http.1;
    } else if family == AF_UNIX && sql != Protocol::Unknown {
        sock.class = SOCK_CAPTURE;
        sock.protocol = sql as u8;
        sock.side = SIDE_CLIENT;
    } else if client != Protocol::Unknown {
        sock.class = SOCK_CAPTURE;
        sock.protocol = client as u8;
        sock.side = SIDE_CLIENT;
    } else if family == AF_UNIX
        || setting!(SOCKETS_CONFIG.sniff_http) != 0
        || setting!(SOCKETS_CONFIG.sniff_amqp) != 0
    {
        sock.tries += 1;
        if sock.tries >= MAX_TRIES {
            sock.class = SOCK_OTHER;
        }
    } else {
        // TCP on a port of no interest, and nothing to sniff for.
        sock.class = SOCK_OTHER;
    }
}

/// The `struct sock` of a socket file (file.private_data → socket.sk).
#[inline(always)]
fn sock_of(file: *const u8) -> Option<*const u8> {
    read_ptr(file, setting!(SOCKETS_CONFIG.file_private_data_offset))
        .and_then(|s| read_ptr(s, setting!(SOCKETS_CONFIG.socket_sk_offset)))
}

/// The peer's TCP/UDP port of an inet socket (0 when unreadable).
#[inline(always)]
fn peer_port(sk: *const u8) -> u16 {
    u16::from_be(read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_dport_offset)).unwrap_or(0))
}

/// What a socket no byte has classified yet is, when its peer's port says so: a TCP connection
/// to a SQL server port is a SQL client connection (the verdict its first bytes will confirm).
/// Lets a send be known as SQL at sys_enter, before the classifier has seen it: the first
/// statement on a connection opened before tracing began, a PostgreSQL startup message.
#[inline(always)]
pub fn sql_client_by_port(file: *const u8) -> Option<SocketVerdict> {
    let sk = sock_of(file)?;
    let family = read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_family_offset))?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let port = peer_port(sk);
    let protocol = match port_protocol(port) {
        PORT_SQL => Protocol::Unknown as u8,
        p if p == Protocol::Mysql as u8 || p == Protocol::Postgres as u8 => p,
        _ => return None,
    };
    Some(SocketVerdict {
        class: SOCK_CAPTURE,
        protocol,
        tries: 0,
        family: family as u8,
        side: SIDE_CLIENT,
        _pad: [0; 3],
    })
}

/// The protocol connections to TCP server `port` are captured as (0: not by port).
#[inline(always)]
fn port_protocol(port: u16) -> u8 {
    match CAPTURE_PORTS.get(u32::from(port) / 8) {
        Some(protocols) => protocols[(port % 8) as usize],
        None => 0,
    }
}

/// Whether the first bytes are the start of an HTTP request or a uwsgi request packet, and
/// which end the traced process is: it received a request (server) or sent one (client).
#[inline(always)]
fn sniff_http(b: [u8; 8], len: u32, sending: bool) -> (Protocol, u8) {
    if setting!(SOCKETS_CONFIG.sniff_http) == 0 {
        return (Protocol::Unknown, SIDE_CLIENT);
    }
    let side = if sending { SIDE_CLIENT } else { SIDE_SERVER };
    let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let method = match &word.to_be_bytes() {
        b"GET " | b"PUT " => true,
        b"POST" | b"HEAD" => b[4] == b' ',
        b"DELE" => b[4] == b'T' && b[5] == b'E' && b[6] == b' ',
        b"PATC" => b[4] == b'H' && b[5] == b' ',
        b"OPTI" => b[4] == b'O' && b[5] == b'N' && b[6] == b'S' && b[7] == b' ',
        b"TRAC" => b[4] == b'E' && b[5] == b' ',
        b"CONN" => b[4] == b'E' && b[5] == b'C' && b[6] == b'T' && b[7] == b' ',
        _ => false,
    };
    if method {
        return (Protocol::Http, side);
    }
    // uwsgi: modifier1 0 (WSGI), a little-endian datasize that fits the message, modifier2 0,
    // then the first variable: a short name in capitals (REQUEST_METHOD, QUERY_STRING, …).
    let datasize = u32::from(b[1]) | u32::from(b[2]) << 8;
    let key_len = u32::from(b[4]) | u32::from(b[5]) << 8;
    if !sending
        && b[0] == 0
        && b[3] == 0
        && datasize >= 4
        && datasize + 4 <= len
        && (1..=64).contains(&key_len)
        && b[6].is_ascii_uppercase()
        && (b[7].is_ascii_uppercase() || b[7] == b'_')
    {
        return (Protocol::Uwsgi, SIDE_SERVER);
    }
    (Protocol::Unknown, SIDE_CLIENT)
}

/// A client's first message of AMQP 0-9-1 (the protocol header, on any stream socket) or of
/// memcached (a text command or a binary request, on Unix sockets and TCP ports not listed).
#[inline(always)]
fn sniff_client(b: [u8; 8], sending: bool) -> Protocol {
    if !sending {
        return Protocol::Unknown;
    }
    if setting!(SOCKETS_CONFIG.sniff_amqp) != 0 && b == *b"AMQP\x00\x00\x09\x01" {
        return Protocol::Amqp;
    }
    if setting!(SOCKETS_CONFIG.sniff_cache) == 0 {
        return Protocol::Unknown;
    }
    // Binary protocol: request magic, a known opcode (get..gatkq), no vbucket data type.
    if b[0] == 0x80 && b[1] <= 0x24 && b[5] == 0 {
        return Protocol::Memcached;
    }
    let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let text = match &word.to_be_bytes() {
        b"get " | b"set " | b"add " | b"cas " | b"gat " => true,
        b"gets" | b"gats" => b[4] == b' ',
        b"dele" => b[4] == b't' && b[5] == b'e' && b[6] == b' ',
        b"incr" | b"decr" => b[4] == b' ',
        b"touc" => b[4] == b'h' && b[5] == b' ',
        b"appe" => b[4] == b'n' && b[5] == b'd' && b[6] == b' ',
        b"prep" => b[4] == b'e' && b[5] == b'n' && b[6] == b'd',
        b"repl" => b[4] == b'a' && b[5] == b'c' && b[6] == b'e',
        // Meta commands: two letters, then a space and a key.
        [b'm', b'g' | b's' | b'd' | b'a', b' ', _] => true,
        _ => false,
    };
    if text {
        Protocol::Memcached
    } else {
        Protocol::Unknown
    }
}

/// Which protocol the first bytes of a message look like, if any.
///
/// MySQL: a packet header (3-byte length, sequence id) whose length is the rest of the syscall:
/// from the client a command (sequence 0) or the login (sequence 1); from the server the greeting
/// (protocol version 10). PostgreSQL: from the client the startup, SSL or GSS request (length,
/// then a protocol code), or a typed message whose length fits; from the server an
/// authentication request.
#[inline(always)]
fn sniff_sql(b: [u8; 8], len: u32, sending: bool) -> Protocol {
    if setting!(SOCKETS_CONFIG.sniff_sql) == 0 {
        return Protocol::Unknown;
    }
    let my_len = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
    let seq = b[3];
    if my_len + 4 == len {
        if sending && seq == 0 && matches!(b[4], 0x01..=0x03 | 0x0e | 0x16..=0x1a | 0x1f) {
            return Protocol::Mysql;
        }
        if sending && seq == 1 && len >= 36 {
            return Protocol::Mysql;
        }
        if !sending && seq == 0 && b[4] == 0x0a {
            return Protocol::Mysql;
        }
    }
    // Constant indexes only: a computed one would leave a bounds check the verifier rejects.
    let be0 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let be1 = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
    let be4 = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let client_type = matches!(
        b[0],
        b'Q' | b'P' | b'B' | b'E' | b'S' | b'X' | b'D' | b'C' | b'H' | b'F' | b'p'
    );
    if sending {
        if be0 == len && matches!(be4, 0x0003_0000 | 80_877_103 | 80_877_104) {
            return Protocol::Postgres;
        }
        if client_type && be1 >= 4 && be1 < len {
            return Protocol::Postgres;
        }
    } else if b[0] == b'R' && be1 >= 8 && be1 < len {
        return Protocol::Postgres;
    }
    Protocol::Unknown
}

/// Sends a Connection event: the endpoints of a newly recognized connection.
#[inline(always)]
fn emit_connection(call: &Call, ino: u64, sock: &SocketVerdict, file: *const u8, scratch: *mut u8) {
    let header = SocketEventHeader {
        kind: EventKind::Connection as u8,
        direction: 0,
        protocol: sock.protocol,
        family: sock.family,
        tgid: call.tgid,
        generation: call.generation,
        tid: call.tid,
        conn: ino,
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        len: 0,
        captured: core::mem::size_of::<ConnInfo>() as u32,
        side: sock.side,
        _pad: [0; 7],
        thread_syscalls: call.thread_syscalls,
    };
    // The connection record goes after the first CAP data bytes, which the data event that
    // follows still needs.
    let record_at = HEADER_BYTES + CAP;
    // SAFETY: the record (header + info, 188 bytes) fits in the second half of the data area.
    let info = unsafe {
        let base = scratch.add(record_at);
        core::ptr::write_unaligned(base as *mut SocketEventHeader, header);
        &mut *(base.add(HEADER_BYTES) as *mut ConnInfo)
    };
    info.server_port = 0;
    info.client_port = 0;
    info._pad = 0;
    info.server_addr = [0; 16];
    info.client_addr = [0; 16];
    info.path = [0; UNIX_PATH_BYTES];
    let sk = sock_of(file);
    if let Some(sk) = sk {
        match u16::from(sock.family) {
            AF_INET => {
                info.server_port = peer_port(sk);
                info.client_port =
                    read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_num_offset)).unwrap_or(0);
                let d = read_at::<[u8; 4]>(sk, setting!(SOCKETS_CONFIG.sk_daddr_offset))
                    .unwrap_or([0; 4]);
                let s = read_at::<[u8; 4]>(sk, setting!(SOCKETS_CONFIG.sk_rcv_saddr_offset))
                    .unwrap_or([0; 4]);
                info.server_addr[..4].copy_from_slice(&d);
                info.client_addr[..4].copy_from_slice(&s);
            }
            AF_INET6 => {
                info.server_port = peer_port(sk);
                info.client_port =
                    read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_num_offset)).unwrap_or(0);
                info.server_addr =
                    read_at::<[u8; 16]>(sk, setting!(SOCKETS_CONFIG.sk_v6_daddr_offset))
                        .unwrap_or([0; 16]);
                info.client_addr =
                    read_at::<[u8; 16]>(sk, setting!(SOCKETS_CONFIG.sk_v6_rcv_saddr_offset))
                        .unwrap_or([0; 16]);
            }
            _ => {
                // The server's path is the peer's bound address.
                if let Some(peer) = read_ptr(sk, setting!(SOCKETS_CONFIG.unix_peer_offset))
                    && let Some(addr) = read_ptr(peer, setting!(SOCKETS_CONFIG.unix_addr_offset))
                {
                    // sockaddr_un: a 2-byte family, then the path.
                    info.path = read_at::<[u8; UNIX_PATH_BYTES]>(
                        addr,
                        setting!(SOCKETS_CONFIG.unix_address_name_offset) + 2,
                    )
                    .unwrap_or([0; UNIX_PATH_BYTES]);
                }
            }
        }
    }
    let size = HEADER_BYTES + core::mem::size_of::<ConnInfo>();
    // SAFETY: the record is `size` bytes of the scratch buffer.
    let r = unsafe {
        bpf_ringbuf_output(
            &SOCKET_EVENTS as *const RingBuf as *mut core::ffi::c_void,
            scratch.add(record_at) as *mut core::ffi::c_void,
            size as u64,
            wakeup_flag(),
        )
    };
    if r != 0 {
        dropped(SocketDrop::EventLost);
    }
}

/// Wake the reader only once the ring is filling up; otherwise it polls on a timer.
#[inline(always)]
pub(crate) fn wakeup_flag() -> u64 {
    // SAFETY: a query on our own ring buffer map.
    let waiting = unsafe {
        bpf_ringbuf_query(
            &SOCKET_EVENTS as *const RingBuf as *mut core::ffi::c_void,
            u64::from(BPF_RB_AVAIL_DATA),
        )
    };
    if waiting >= u64::from(setting!(SOCKETS_CONFIG.wakeup_bytes)) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Sends a Data event: header + the captured bytes.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "inlined; all of these are at hand"
)]
fn emit_data(
    call: &Call,
    ino: u64,
    sock: &SocketVerdict,
    sending: bool,
    len: u32,
    copied: u32,
    scratch: *mut u8,
) {
    let copied = if copied > CAP as u32 {
        CAP as u32
    } else {
        copied
    };
    let header = SocketEventHeader {
        kind: EventKind::Data as u8,
        direction: if sending { DIR_SENT } else { DIR_RECEIVED },
        protocol: sock.protocol,
        family: sock.family,
        tgid: call.tgid,
        generation: call.generation,
        tid: call.tid,
        conn: ino,
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        len,
        captured: copied,
        side: sock.side,
        _pad: [0; 7],
        thread_syscalls: call.thread_syscalls,
    };
    // SAFETY: the header fits at the start of the scratch record.
    unsafe { core::ptr::write_unaligned(scratch as *mut SocketEventHeader, header) };
    let size = HEADER_BYTES as u64 + u64::from(copied);
    // SAFETY: the record is the first `size` ≤ HEADER_BYTES + CAP bytes of the scratch buffer.
    let r = unsafe {
        bpf_ringbuf_output(
            &SOCKET_EVENTS as *const RingBuf as *mut core::ffi::c_void,
            scratch as *mut core::ffi::c_void,
            size,
            wakeup_flag(),
        )
    };
    if r != 0 {
        dropped(SocketDrop::EventLost);
    }
}
