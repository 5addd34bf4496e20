//! The capture's collector: drains the kernel's socket events as they arrive and hands each to
//! the family of its connection's protocol.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, RawFd},
    time::Duration,
};

use arrow_array::RecordBatch;
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, RingBuf},
};
use tracer_common::python::{PY_STACK_DEPTH, PyFrameRef};
use tracer_common::sockets::{
    CAPTURE_PORTS, ConnInfo, EventKind, HEADER_BYTES, PORT_SQL, Protocol, SOCK_OTHER,
    SOCKET_EVENTS, SOCKET_VERDICTS, SocketEventHeader, SocketVerdict,
};

use crate::{
    kernel::maps::{self, MapAccessError},
    processes::{ProcessKey, Processes},
    python::Python,
    settings::Settings,
    tracers::{
        DropCount, Interval, Tracer, TracerError, amqp::RpcFamily, http::HttpFamily,
        memcached::CacheFamily, sql::SqlFamily,
    },
};

/// A connection's endpoints, as its Connection event told them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// IP address, or the Unix socket's path.
    pub server_address: String,
    /// None for Unix sockets.
    pub server_port: Option<u16>,
    pub client_address: Option<String>,
    pub client_port: Option<u16>,
    /// tcp or unix.
    pub transport: &'static str,
}

impl Endpoints {
    /// Decodes a Connection event's endpoints (IPv4-mapped IPv6 addresses shown as IPv4).
    pub fn of(h: &SocketEventHeader, info: &ConnInfo) -> Endpoints {
        let ip = |b: &[u8; 16]| match h.family {
            2 => Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
            _ => {
                let v6 = Ipv6Addr::from(*b);
                v6.to_ipv4_mapped()
                    .map_or_else(|| v6.to_string(), |v4| v4.to_string())
            }
        };
        match h.family {
            2 | 10 => Endpoints {
                server_address: ip(&info.server_addr),
                server_port: Some(info.server_port),
                client_address: Some(ip(&info.client_addr)),
                client_port: Some(info.client_port),
                transport: "tcp",
            },
            _ => Endpoints {
                server_address: crate::processes::comm_string(&info.path),
                server_port: None,
                client_address: None,
                client_port: None,
                transport: "unix",
            },
        }
    }
}

/// A statement a SQL connection completed, for the HTTP family to charge to the request its
/// thread is serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatementDone {
    pub process: ProcessKey,
    pub tid: u32,
    pub duration_ns: u64,
}

/// What one family tells the others while it handles an event.
#[derive(Default)]
pub struct Notes {
    pub statements: Vec<StatementDone>,
}

/// One protocol family's parsers and tables.
pub trait Family {
    /// A connection was recognized: its endpoints.
    fn connection(&mut self, h: &SocketEventHeader, info: &ConnInfo);
    /// A syscall moved `h.len` bytes on a connection; `data` are the first of them.
    fn data(&mut self, h: &SocketEventHeader, data: &[u8], notes: &mut Notes);
    /// The traced process closed the connection.
    fn close(&mut self, h: &SocketEventHeader, notes: &mut Notes);
    /// What the other families noted (after each event).
    fn notes(&mut self, _notes: &Notes) {}
    /// Connections the family gave up on (not its protocol after all): the kernel can stop
    /// capturing them.
    fn take_rejected(&mut self) -> Vec<u64> {
        Vec::new()
    }
    /// The interval's rows of its tables.
    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError>;
    /// Losses counted in user space since the last call.
    fn take_drops(&mut self) -> Vec<DropCount>;
}

pub struct Capture {
    ring: RingBuf<MapData>,
    verdicts: BpfHashMap<MapData, u64, SocketVerdict>,
    families: Families,
    /// The SQL statements' Python call sites (with the SQL family).
    python: Option<Python>,
}

/// The enabled families, and the notes they pass each other.
struct Families {
    sql: Option<SqlFamily>,
    http: Option<HttpFamily>,
    rpc: Option<RpcFamily>,
    cache: Option<CacheFamily>,
    notes: Notes,
}

impl Capture {
    pub fn new(ebpf: &mut Ebpf, settings: &Settings) -> Result<Self, TracerError> {
        let ring = maps::take_as(ebpf, SOCKET_EVENTS)?;
        let verdicts = maps::take_as(ebpf, SOCKET_VERDICTS)?;
        let mut ports: Array<MapData, [u8; 8]> = maps::take_as(ebpf, CAPTURE_PORTS)?;
        let sql = settings.asked_for("sql");
        let (rpc, cache) = (settings.asked_for("rpc"), settings.asked_for("cache"));
        let mut table = vec![[0u8; 8]; 65536 / 8];
        let mut set = |port: u16, protocol: u8| {
            table[usize::from(port) / 8][usize::from(port) % 8] = protocol;
        };
        if sql {
            for &port in &settings.sql.ports {
                set(
                    port,
                    match port {
                        3306 => Protocol::Mysql as u8,
                        5432 => Protocol::Postgres as u8,
                        _ => PORT_SQL,
                    },
                );
            }
        }
        if rpc {
            for &port in &settings.rpc_ports {
                set(port, Protocol::Amqp as u8);
            }
        }
        if cache {
            for &port in &settings.cache_ports {
                set(port, Protocol::Memcached as u8);
            }
        }
        for (i, protocols) in table.iter().enumerate() {
            if *protocols != [0; 8] {
                ports
                    .set(i as u32, *protocols, 0)
                    .map_err(MapAccessError::of(CAPTURE_PORTS))?;
            }
        }
        let python = if sql && settings.sql.code {
            Some(Python::new(
                ebpf,
                &settings.sql.code_skip,
                settings.sql.code_versions.clone(),
            )?)
        } else {
            None
        };
        Ok(Capture {
            ring,
            verdicts,
            python,
            families: Families {
                sql: sql.then(|| SqlFamily::new(settings.sql.clone())),
                http: settings
                    .asked_for("http")
                    .then(|| HttpFamily::new(settings.asked_for("sql"))),
                rpc: rpc.then(RpcFamily::new),
                cache: cache.then(CacheFamily::new),
                notes: Notes::default(),
            },
        })
    }

    /// Tells the kernel to stop capturing connections a family rejected.
    fn reject(&mut self) {
        let rejected: Vec<u64> = self
            .families
            .all()
            .flat_map(|f| f.take_rejected())
            .collect();
        for ino in rejected {
            let verdict = SocketVerdict {
                class: SOCK_OTHER,
                protocol: Protocol::Unknown as u8,
                tries: 0,
                family: 0,
                side: 0,
                _pad: [0; 3],
            };
            // The socket may be gone already (its entry with it): nothing to stop then.
            let _ = self.verdicts.insert(ino, verdict, 0);
        }
    }
}

impl Families {
    fn all(&mut self) -> impl Iterator<Item = &mut dyn Family> {
        let sql = self.sql.as_mut().map(|f| f as &mut dyn Family);
        let http = self.http.as_mut().map(|f| f as &mut dyn Family);
        let rpc = self.rpc.as_mut().map(|f| f as &mut dyn Family);
        let cache = self.cache.as_mut().map(|f| f as &mut dyn Family);
        sql.into_iter().chain(http).chain(rpc).chain(cache)
    }

    /// The family of a protocol (SQL connections on extra ports may be `Unknown` until their
    /// first bytes tell).
    fn family_of(&mut self, protocol: u8) -> Option<&mut dyn Family> {
        match Protocol::try_from(protocol) {
            Ok(Protocol::Mysql | Protocol::Postgres | Protocol::Unknown) => {
                self.sql.as_mut().map(|f| f as &mut dyn Family)
            }
            Ok(Protocol::Http | Protocol::Uwsgi) => {
                self.http.as_mut().map(|f| f as &mut dyn Family)
            }
            Ok(Protocol::Amqp) => self.rpc.as_mut().map(|f| f as &mut dyn Family),
            Ok(Protocol::Memcached) => self.cache.as_mut().map(|f| f as &mut dyn Family),
            Err(_) => None,
        }
    }

    fn record(&mut self, r: &[u8], python: Option<&mut Python>) {
        if r.len() < HEADER_BYTES {
            return;
        }
        // SAFETY: length checked; read_unaligned makes no alignment assumption.
        let h: SocketEventHeader = unsafe { std::ptr::read_unaligned(r.as_ptr().cast()) };
        let body = &r[HEADER_BYTES..];
        let mut notes = std::mem::take(&mut self.notes);
        notes.statements.clear();
        let sql_wire = matches!(
            Protocol::try_from(h.protocol),
            Ok(Protocol::Mysql | Protocol::Postgres | Protocol::Unknown)
        );
        if h.kind == EventKind::PyStack as u8 {
            if let (Some(sql), Some(python), true) = (self.sql.as_mut(), python, sql_wire)
                && let Some((frames, truncated)) = stack_frames(body)
            {
                sql.stack(&h, &frames, truncated, python);
            }
        } else if let (Some(sql), true, true) =
            (self.sql.as_mut(), sql_wire, h.kind == EventKind::Data as u8)
        {
            let data = &body[..(h.captured as usize).min(body.len())];
            sql.data_event(&h, data, &mut notes, python.as_deref());
        } else if let Some(family) = self.family_of(h.protocol) {
            if h.kind == EventKind::Connection as u8 {
                if body.len() >= size_of::<ConnInfo>() {
                    // SAFETY: length checked; read_unaligned makes no alignment assumption.
                    let info: ConnInfo = unsafe { std::ptr::read_unaligned(body.as_ptr().cast()) };
                    family.connection(&h, &info);
                }
            } else if h.kind == EventKind::Data as u8 {
                let data = &body[..(h.captured as usize).min(body.len())];
                family.data(&h, data, &mut notes);
            } else if h.kind == EventKind::Close as u8 {
                family.close(&h, &mut notes);
            }
        }
        if !notes.statements.is_empty() {
            for family in self.all() {
                family.notes(&notes);
            }
        }
        self.notes = notes;
    }
}

/// A PyStack event's frames (its body is a [`PyStackBody`] cut after its `depth` frames) and
/// whether the stack was deeper.
fn stack_frames(body: &[u8]) -> Option<(Vec<PyFrameRef>, bool)> {
    let word = |at: usize| Some(u32::from_ne_bytes(body.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_ne_bytes(body.get(at..at + 8)?.try_into().ok()?));
    let (depth, truncated) = (word(0)? as usize, word(4)? != 0);
    let frames = (0..depth.min(PY_STACK_DEPTH))
        .map_while(|i| {
            let at = 8 + 16 * i;
            Some(PyFrameRef {
                code: u64_at(at)?,
                instr: u64_at(at + 8)?,
            })
        })
        .collect();
    Some((frames, truncated))
}

impl Tracer for Capture {
    /// The targets' interpreters are looked at before run.json says tracing is on: their
    /// first statements have call sites.
    fn start(&mut self, processes: &Processes) {
        if let Some(python) = &mut self.python
            && let Err(e) = python.examine(processes)
        {
            tracing::warn!("Python call sites: {e}");
        }
    }

    fn rings(&self) -> Vec<RawFd> {
        vec![self.ring.as_raw_fd()]
    }

    /// With call sites on, a new process's interpreter is looked at when the rings are drained,
    /// and its statements have call sites only from then on: drained five times as often.
    fn ring_poll(&self) -> Duration {
        if self.python.is_some() {
            crate::tracers::RING_POLL / 5
        } else {
            crate::tracers::RING_POLL
        }
    }

    fn drain(&mut self, processes: &Processes) {
        if let Some(python) = &mut self.python
            && let Err(e) = python.examine(processes)
        {
            tracing::warn!("Python call sites: {e}");
        }
        // Decoded in place: the records stay in the ring until decoded.
        while let Some(item) = self.ring.next() {
            self.families.record(&item, self.python.as_mut());
        }
        self.reject();
    }

    fn snapshot(&mut self, processes: &Processes) -> Result<(), TracerError> {
        self.drain(processes);
        Ok(())
    }

    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let mut out = Vec::new();
        for family in self.families.all() {
            out.extend(family.batches(interval, processes)?);
        }
        Ok(out)
    }

    fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), TracerError> {
        // Connections of ended processes are written as closed, then dropped, by the families.
        if let Some(python) = &mut self.python {
            python.reap(ended);
        }
        Ok(())
    }

    fn take_drops(&mut self) -> Vec<DropCount> {
        self.families.all().flat_map(|f| f.take_drops()).collect()
    }
}
