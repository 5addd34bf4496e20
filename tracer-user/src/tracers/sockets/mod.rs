//! The socket capture: the kernel copies the traffic of the connections that matter (SQL
//! servers' ports, HTTP and uwsgi requests, …) into one ring, and this collector hands each
//! connection's events to its protocol family ([`Family`]: SQL, HTTP, RPC over AMQP, memcached),
//! which parses them and writes its own tables. The families are registrations of their own
//! (`sql`, `http`, `rpc`, `cache`) for their tables and views; this one is enabled when any of
//! them is, and owns the kernel side.

mod capture;

use aya::Ebpf;
pub use capture::{Endpoints, Family, Notes, StatementDone};
use tracer_common::{
    dispatch::{
        HOOK_CLOSE, HOOK_PYSTACK, HOOK_SOCKETS, KIND_FILE, KIND_MASK, KIND_SHIFT, OP_MASK,
        RESOLVE_FD, SHAPE_MASK,
    },
    fileio::FileOp,
    sockets::{
        self as common, SOCKET_EVENTS, SOCKET_SCRATCH, SocketDrop, SocketsConfig, THREAD_SYSCALLS,
    },
};

use super::{Build, KernelDrops, Registration, dispatch::facts};
use crate::{kernel::btf::BtfError, loader::KernelSetup, settings::Settings};

/// Largest per-thread syscall table: 2^16 slots (1 MiB).
const MAX_THREAD_SLOTS: u32 = 1 << 16;

pub static REGISTRATION: Registration = Registration {
    name: "sockets",
    selectable: false,
    wanted: |s| {
        ["sql", "http", "rpc", "cache"]
            .iter()
            .any(|t| s.asked_for(t))
    },
    probes: &[],
    tables: &[],
    metrics: &[],
    drops: Some(KernelDrops::of::<SocketDrop>),
    setup,
    hooks,
    build,
};

fn setup(k: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    let b = k.btf;
    let off = |s: &str, f: &str| b.field_offset(s, f);
    let sk = |f: &str| b.path_offset(&[("sock", "__sk_common"), ("sock_common", f)]);
    let s = k.settings;
    let http = s.asked_for("http");
    let thread_slots = k.pid_max.next_power_of_two().min(MAX_THREAD_SLOTS);
    let config = SocketsConfig {
        capture: s.sql.capture,
        capture_http: s.http_capture,
        sniff_sql: u32::from(s.asked_for("sql")),
        sniff_http: u32::from(http),
        sniff_amqp: u32::from(s.asked_for("rpc")),
        sniff_cache: u32::from(s.asked_for("cache")),
        // Requests' costs in syscalls: counted per thread only when HTTP is traced.
        thread_syscalls: u32::from(http),
        thread_mask: thread_slots - 1,
        wakeup_bytes: s.sql.ring_bytes / 4,
        file_private_data_offset: off("file", "private_data")?,
        socket_sk_offset: off("socket", "sk")?,
        sk_family_offset: sk("skc_family")?,
        sk_dport_offset: sk("skc_dport")?,
        sk_num_offset: sk("skc_num")?,
        sk_daddr_offset: sk("skc_daddr")?,
        sk_rcv_saddr_offset: sk("skc_rcv_saddr")?,
        // Kernels without IPv6 lack these; IPv6 connections then show no addresses.
        sk_v6_daddr_offset: sk("skc_v6_daddr").unwrap_or(0),
        sk_v6_rcv_saddr_offset: sk("skc_v6_rcv_saddr").unwrap_or(0),
        unix_peer_offset: off("unix_sock", "peer")?,
        unix_addr_offset: off("unix_sock", "addr")?,
        unix_address_len_offset: off("unix_address", "len")?,
        unix_address_name_offset: off("unix_address", "name")?,
        sk_type_offset: off("sock", "sk_type")?,
    };
    k.global(common::CONFIG, &config);
    k.map_entries(SOCKET_SCRATCH, k.nr_cpus);
    k.map_entries(SOCKET_EVENTS, s.sql.ring_bytes);
    k.map_entries(THREAD_SYSCALLS, if http { thread_slots } else { 1 });
    Ok(())
}

/// Send/receive syscalls with a user buffer, on anything that may be a socket; and close(),
/// which ends a connection.
fn hooks(s: &Settings, name: &str) -> u32 {
    if name == "close" {
        return HOOK_CLOSE;
    }
    let facts = facts(name);
    if facts & SHAPE_MASK == 0 || (facts & KIND_MASK) >> KIND_SHIFT == KIND_FILE {
        return 0;
    }
    // Sends also at their entry, for the Python stack of a SQL client's send.
    let op = facts & OP_MASK;
    let send = op == FileOp::Write as u32 || op == FileOp::Send as u32;
    let stacks = if send && s.asked_for("sql") && s.sql.code {
        HOOK_PYSTACK
    } else {
        0
    };
    HOOK_SOCKETS | RESOLVE_FD | stacks
}

fn build(ebpf: &mut Ebpf, b: &Build<'_>) -> super::Built {
    Ok(Some(Box::new(capture::Capture::new(ebpf, b.settings)?)))
}

/// Whether sys_enter is needed for the capture's close hook.
pub fn wants_enter(s: &Settings) -> bool {
    (REGISTRATION.wanted)(s)
}
