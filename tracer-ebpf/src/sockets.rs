//! The socket capture's hook (called by [`crate::dispatch`] at sys_exit for send/receive
//! syscalls on sockets). For every such syscall of a traced process, decide once per socket
//! whether its traffic is captured (TCP: the server port is in `CAPTURE_PORTS`; Unix: the first
//! messages look like MySQL or PostgreSQL), then copy what the syscall moved, up to the capture
//! size, into `SOCKET_EVENTS`. Parsing happens in user space.

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
        CAPTURE_MAX, ConnInfo, DIR_RECEIVED, DIR_SENT, EventKind, HEADER_BYTES, Protocol,
        SOCK_CAPTURE, SOCK_OTHER, SOCK_PENDING, SOCKET_EVENTS_BYTES, SOCKET_VERDICTS_ENTRIES,
        SocketDrop, SocketEventHeader, SocketVerdict, SocketsConfig, UNIX_PATH_BYTES,
    },
};

use crate::{
    dispatch::{self, Call},
    kernel::{config_global, count_drop, read_at, read_ptr, setting},
};

config_global!(SOCKETS_CONFIG: SocketsConfig);

#[map]
static SOCKET_VERDICTS: LruHashMap<u64, SocketVerdict> =
    LruHashMap::with_max_entries(SOCKET_VERDICTS_ENTRIES, 0);

#[map]
static CAPTURE_PORTS: Array<u64> = Array::with_max_entries(1024, 0);

#[map]
static SOCKET_EVENTS: RingBuf = RingBuf::with_byte_size(SOCKET_EVENTS_BYTES, 0);

#[map]
static SOCKETS_DROPS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(SocketDrop::ALL.len() as u32, 0);

#[inline(always)]
fn dropped(reason: SocketDrop) {
    count_drop(&SOCKETS_DROPS, reason.index());
}

const CAP: usize = CAPTURE_MAX as usize;
const SCRATCH_BYTES: usize = HEADER_BYTES + 2 * CAP;

/// One scratch record per CPU (an array indexed by CPU: per-CPU maps cap values at 32 KiB).
/// The loader sizes it to the number of possible CPUs.
#[map]
static SOCKET_SCRATCH: Array<[u8; SCRATCH_BYTES]> = Array::with_max_entries(1, 0);

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Sniff attempts on a Unix socket before it is declared not SQL.
const MAX_TRIES: u8 = 4;

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
    let (tgid, generation) = (call.tgid, call.generation);
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
    let (len, copied) = capture(scratch, buffer_shape, call);
    let mut sock = match known {
        Some(s) => s,
        None => SocketVerdict {
            class: SOCK_PENDING,
            protocol: Protocol::Unknown as u8,
            tries: 0,
            family: 0,
            _pad: 0,
        },
    };
    if sock.class == SOCK_PENDING {
        classify(&mut sock, file, scratch, copied, len, sending);
        if SOCKET_VERDICTS.insert(ino, sock, 0).is_err() {
            dropped(SocketDrop::VerdictMapFull);
        }
        if sock.class != SOCK_CAPTURE {
            return;
        }
        emit_connection(tgid, generation, ino, &sock, file, scratch);
    }
    emit_data(tgid, generation, ino, &sock, sending, len, copied, scratch);
}

/// Copies up to the capture size of what the syscall moved into the scratch data area.
/// Returns (bytes moved, bytes copied).
#[inline(always)]
fn capture(scratch: *mut u8, buffer_shape: u32, call: &Call) -> (u32, u32) {
    let mut len = call.ret as u64;
    let arg1 = dispatch::arg(call, 1);
    let arg2 = dispatch::arg(call, 2);
    let (iov, iov_count) = match buffer_shape {
        shape::CONTIGUOUS => {
            let limit = (setting!(SOCKETS_CONFIG.capture) as u64).min(len);
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
    let limit = (setting!(SOCKETS_CONFIG.capture) as u64).min(len);
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
    let sk = read_ptr(file, setting!(SOCKETS_CONFIG.file_private_data_offset))
        .and_then(|s| read_ptr(s, setting!(SOCKETS_CONFIG.socket_sk_offset)));
    let Some(sk) = sk else {
        sock.class = SOCK_OTHER;
        return;
    };
    let family = read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_family_offset)).unwrap_or(0);
    sock.family = family as u8;
    let sniffed = if copied >= 8 {
        sniff(head(scratch), len, sending)
    } else {
        Protocol::Unknown
    };
    match family {
        AF_INET | AF_INET6 => {
            let port = u16::from_be(
                read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_dport_offset)).unwrap_or(0),
            );
            if !port_is_captured(port) {
                sock.class = SOCK_OTHER;
                return;
            }
            sock.class = SOCK_CAPTURE;
            sock.protocol = match (sniffed, port) {
                (Protocol::Unknown, 3306) => Protocol::Mysql as u8,
                (Protocol::Unknown, 5432) => Protocol::Postgres as u8,
                (p, _) => p as u8,
            };
        }
        AF_UNIX => {
            if sniffed != Protocol::Unknown {
                sock.class = SOCK_CAPTURE;
                sock.protocol = sniffed as u8;
            } else {
                sock.tries += 1;
                if sock.tries >= MAX_TRIES {
                    sock.class = SOCK_OTHER;
                }
            }
        }
        _ => sock.class = SOCK_OTHER,
    }
}

#[inline(always)]
fn port_is_captured(port: u16) -> bool {
    match CAPTURE_PORTS.get(u32::from(port) / 64) {
        Some(bits) => bits & (1u64 << (port % 64)) != 0,
        None => false,
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
fn sniff(b: [u8; 8], len: u32, sending: bool) -> Protocol {
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
fn emit_connection(
    tgid: u32,
    generation: u32,
    ino: u64,
    sock: &SocketVerdict,
    file: *const u8,
    scratch: *mut u8,
) {
    let header = SocketEventHeader {
        kind: EventKind::Connection as u8,
        direction: 0,
        protocol: sock.protocol,
        family: sock.family,
        tgid,
        generation,
        _pad: 0,
        conn: ino,
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        len: 0,
        captured: core::mem::size_of::<ConnInfo>() as u32,
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
    let sk = read_ptr(file, setting!(SOCKETS_CONFIG.file_private_data_offset))
        .and_then(|s| read_ptr(s, setting!(SOCKETS_CONFIG.socket_sk_offset)));
    if let Some(sk) = sk {
        match u16::from(sock.family) {
            AF_INET => {
                info.server_port = u16::from_be(
                    read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_dport_offset)).unwrap_or(0),
                );
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
                info.server_port = u16::from_be(
                    read_at::<u16>(sk, setting!(SOCKETS_CONFIG.sk_dport_offset)).unwrap_or(0),
                );
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
fn wakeup_flag() -> u64 {
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
    tgid: u32,
    generation: u32,
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
        tgid,
        generation,
        _pad: 0,
        conn: ino,
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        len,
        captured: copied,
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
