//! The SQL family of the socket capture: feeds each SQL connection's protocol parser with the
//! events the capture hands over, and aggregates the statements per interval.

use std::{collections::HashMap, rc::Rc};

use arrow_array::RecordBatch;
use tracer_common::{
    hist,
    python::PyFrameRef,
    sockets::{ConnInfo, DIR_SENT, Protocol as Wire, SocketEventHeader},
};

use super::{
    Chunk, Protocol, Request, Statement,
    fingerprint::{Fingerprint, fingerprint},
    mysql::Mysql,
    postgres::Postgres,
    stacks::{STACKS, Stack, StackRows, stacks_batch},
    tables::{
        CONNECTIONS, ConnectionRow, STATEMENTS, Server, StatementKey, StatementSums,
        connections_batch, statements_batch,
    },
};
use crate::{
    processes::{ProcessKey, Processes},
    python::Python,
    settings::SqlSettings,
    tracers::{
        DropCount, Interval, TracerError,
        sockets::{Endpoints, Family, Notes, StatementDone},
    },
};

/// Fingerprints remembered (statements repeat: prepared ones and ORMs' templates).
const FINGERPRINT_CACHE: usize = 20_000;
/// After this long without traffic, check whether the connection still exists.
const IDLE_CHECK_NS: u64 = 5_000_000_000;

struct Connection {
    process: ProcessKey,
    postgres: bool,
    protocol: Box<dyn Protocol>,
    server_address: String,
    server_port: Option<u16>,
    client_address: Option<String>,
    client_port: Option<u16>,
    transport: &'static str,
    /// This interval's numbers.
    bytes_sent: u64,
    bytes_received: u64,
    statements: u64,
    errors: u64,
    opened: bool,
    active: bool,
    /// The traced process closed it (a Close event).
    closed: bool,
    last_ns: u64,
    /// The Python stack of the last send that carried one (the statement it sends completes
    /// before the next one is sent).
    stack: Option<Rc<Stack>>,
}

impl Connection {
    fn new(process: ProcessKey, protocol: Wire, text_bytes: usize) -> Connection {
        let postgres = protocol == Wire::Postgres;
        let parser: Box<dyn Protocol> = if postgres {
            Box::new(Postgres::new(text_bytes))
        } else {
            Box::new(Mysql::new(text_bytes))
        };
        Connection {
            process,
            postgres,
            protocol: parser,
            server_address: "?".to_owned(),
            server_port: None,
            client_address: None,
            client_port: None,
            transport: "tcp",
            bytes_sent: 0,
            bytes_received: 0,
            statements: 0,
            errors: 0,
            opened: false,
            active: false,
            closed: false,
            last_ns: 0,
            stack: None,
        }
    }

    /// A connection first seen in an event other than its Connection event (that was lost, or
    /// it was recognized before the verdict cache forgot it): endpoints unknown.
    fn for_event(h: &SocketEventHeader, text_bytes: usize) -> Connection {
        let process = ProcessKey {
            tgid: h.tgid,
            generation: h.generation,
        };
        Connection::new(
            process,
            Wire::try_from(h.protocol).unwrap_or(Wire::Unknown),
            text_bytes,
        )
    }

    fn server(&self, systems: &HashMap<(String, Option<u16>), &'static str>) -> Server {
        let system = self.protocol.system().unwrap_or_else(|| {
            // Not seen from its start: what another connection to the same server told, else by
            // protocol.
            systems
                .get(&(self.server_address.clone(), self.server_port))
                .copied()
                .unwrap_or(if self.postgres { "postgresql" } else { "mysql" })
        });
        Server {
            system,
            address: self.server_address.clone(),
            port: self.server_port,
            transport: self.transport,
            namespace: self.protocol.namespace().map(str::to_owned),
        }
    }
}

/// SQL connections and this interval's statements.
pub struct SqlFamily {
    settings: SqlSettings,
    connections: HashMap<u64, Connection>,
    statements: HashMap<StatementKey, StatementSums>,
    stacks: StackRows,
    fingerprints: HashMap<String, Fingerprint>,
    /// What each server turned out to be (MariaDB or MySQL), from greetings.
    systems: HashMap<(String, Option<u16>), &'static str>,
    desyncs: u64,
    completed: Vec<Statement>,
    /// Statements of CPython processes whose stacks cannot be read; stacks none of whose
    /// frames could be named.
    python_unsupported: u64,
    python_unreadable: u64,
}

impl SqlFamily {
    pub fn new(settings: SqlSettings) -> SqlFamily {
        SqlFamily {
            settings,
            connections: HashMap::new(),
            statements: HashMap::new(),
            stacks: StackRows::new(),
            fingerprints: HashMap::new(),
            systems: HashMap::new(),
            desyncs: 0,
            completed: Vec::new(),
            python_unsupported: 0,
            python_unreadable: 0,
        }
    }
}

impl SqlFamily {
    fn connection_event(&mut self, h: &SocketEventHeader, info: &ConnInfo) {
        let process = ProcessKey {
            tgid: h.tgid,
            generation: h.generation,
        };
        let protocol = Wire::try_from(h.protocol).unwrap_or(Wire::Unknown);
        let mut c = Connection::new(process, protocol, self.settings.text_bytes);
        let e = Endpoints::of(h, info);
        c.server_address = e.server_address;
        c.server_port = e.server_port;
        c.client_address = e.client_address;
        c.client_port = e.client_port;
        c.transport = e.transport;
        c.opened = true;
        c.active = true;
        c.last_ns = h.time_ns;
        // A stack taken at the send that made the kernel classify the connection (its peer's
        // port told) came just before this event: it is the first statement's.
        c.stack = self
            .connections
            .get_mut(&h.conn)
            .filter(|old| !old.opened)
            .and_then(|old| old.stack.take());
        self.connections.insert(h.conn, c);
    }

    /// The connection of an event.
    fn conn_of(&mut self, h: &SocketEventHeader) -> &mut Connection {
        let text_bytes = self.settings.text_bytes;
        self.connections
            .entry(h.conn)
            .or_insert_with(|| Connection::for_event(h, text_bytes))
    }

    /// The Python stack of a send on a connection: its call site, for the statement it sends.
    pub fn stack(
        &mut self,
        h: &SocketEventHeader,
        refs: &[PyFrameRef],
        truncated: bool,
        python: &mut Python,
    ) {
        let frames = python.frames(h.tgid, refs);
        if !refs.is_empty() && frames.iter().all(Option::is_none) {
            self.python_unreadable += 1;
        }
        let site = python.call_site(&frames).cloned();
        let named = frames.into_iter().flatten().collect();
        let stack = Rc::new(Stack::new(named, truncated, site));
        self.conn_of(h).stack = Some(stack);
    }

    /// A Data event; `python` tells which processes' statements cannot have a call site.
    pub fn data_event(
        &mut self,
        h: &SocketEventHeader,
        data: &[u8],
        notes: &mut Notes,
        python: Option<&Python>,
    ) {
        let process = ProcessKey {
            tgid: h.tgid,
            generation: h.generation,
        };
        let text_bytes = self.settings.text_bytes;
        let conn = self
            .connections
            .entry(h.conn)
            .or_insert_with(|| Connection::for_event(h, text_bytes));
        let chunk = Chunk {
            sent: h.direction == DIR_SENT,
            time_ns: h.time_ns,
            len: h.len,
            data,
        };
        if chunk.sent {
            conn.bytes_sent += u64::from(h.len);
        } else {
            conn.bytes_received += u64::from(h.len);
        }
        conn.active = true;
        conn.last_ns = h.time_ns;
        self.completed.clear();
        conn.protocol.feed(&chunk, &mut self.completed);
        self.desyncs += conn.protocol.take_desyncs();
        if let Some(system) = conn.protocol.system() {
            self.systems
                .insert((conn.server_address.clone(), conn.server_port), system);
        }
        if self.completed.is_empty() {
            return;
        }
        let server = conn.server(&self.systems);
        let postgres = conn.postgres;
        let stack = conn.stack.clone();
        if stack.is_none() && python.is_some_and(|p| p.unsupported(h.tgid)) {
            self.python_unsupported += self.completed.len() as u64;
        }
        conn.statements += self.completed.len() as u64;
        conn.errors += self.completed.iter().filter(|s| s.error.is_some()).count() as u64;
        for s in std::mem::take(&mut self.completed) {
            notes.statements.push(StatementDone {
                process,
                tid: h.tid,
                duration_ns: s.end_ns.saturating_sub(s.start_ns),
            });
            self.aggregate(process, &server, postgres, stack.as_ref(), s);
        }
    }

    fn aggregate(
        &mut self,
        process: ProcessKey,
        server: &Server,
        postgres: bool,
        stack: Option<&Rc<Stack>>,
        s: Statement,
    ) {
        let (operation, text, raw) = match &s.request {
            Request::Sql(sql) => {
                if self.fingerprints.len() > FINGERPRINT_CACHE {
                    self.fingerprints.clear();
                }
                let f = self
                    .fingerprints
                    .entry(sql.clone())
                    .or_insert_with(|| fingerprint(sql, postgres));
                (f.operation.clone(), f.text.clone(), Some(sql.as_str()))
            }
            Request::Command(name) => ((*name).to_owned(), (*name).to_owned(), None),
        };
        let key = StatementKey {
            process,
            server: server.clone(),
            operation,
            text,
            status: s.error.clone(),
            code: stack.and_then(|st| st.call_site.clone()),
        };
        let duration = s.end_ns.saturating_sub(s.start_ns);
        if let Some(st) = stack {
            let sums = self
                .stacks
                .entry((process, key.text.clone(), st.id))
                .or_default();
            sums.stack.get_or_insert_with(|| st.clone());
            sums.calls += 1;
            sums.duration_ns += duration;
        }
        let sums = self.statements.entry(key).or_default();
        sums.calls += 1;
        if s.error.is_some() {
            sums.errors += 1;
        }
        sums.duration_ns += duration;
        sums.hist[hist::bucket(duration)] += 1;
        sums.bytes_sent += s.bytes_sent;
        sums.bytes_received += s.bytes_received;
        if self.settings.raw_text && sums.sample.is_none() {
            sums.sample = raw.map(str::to_owned);
        }
    }

    /// Whether socket `ino` is still among the process's descriptors.
    fn still_open(tgid: u32, ino: u64) -> bool {
        let target = format!("socket:[{ino}]");
        std::fs::read_dir(format!("/proc/{tgid}/fd"))
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
                })
            })
            .unwrap_or(false)
    }
}

impl Family for SqlFamily {
    fn connection(&mut self, h: &SocketEventHeader, info: &ConnInfo) {
        self.connection_event(h, info);
    }

    fn data(&mut self, h: &SocketEventHeader, data: &[u8], notes: &mut Notes) {
        self.data_event(h, data, notes, None);
    }

    fn close(&mut self, h: &SocketEventHeader, _notes: &mut Notes) {
        if let Some(c) = self.connections.get_mut(&h.conn) {
            c.closed = true;
        }
    }

    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let mut out = Vec::new();
        let mut rows: Vec<(StatementKey, StatementSums)> = self.statements.drain().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if !rows.is_empty() {
            out.push((STATEMENTS, statements_batch(interval, processes, &rows)?));
        }
        let mut stack_rows: Vec<_> = self.stacks.iter().collect();
        stack_rows.sort_by(|a, b| a.0.cmp(b.0));
        if !stack_rows.is_empty() {
            out.push((STACKS, stacks_batch(interval, processes, &stack_rows)?));
        }
        self.stacks.clear();
        let now = crate::kernel::clock_ns(libc::CLOCK_MONOTONIC);
        let mut conn_rows = Vec::new();
        let mut gone = Vec::new();
        for (id, c) in &mut self.connections {
            let ended = !processes.is_live_key(c.process);
            let closed = c.closed
                || c.protocol.closed()
                || ended
                || (now.saturating_sub(c.last_ns) > IDLE_CHECK_NS
                    && !SqlFamily::still_open(c.process.tgid, *id));
            if c.active || c.opened || closed {
                conn_rows.push(ConnectionRow {
                    process: c.process,
                    id: *id,
                    server: c.server(&self.systems),
                    client_address: c.client_address.clone(),
                    client_port: c.client_port,
                    bytes_sent: c.bytes_sent,
                    bytes_received: c.bytes_received,
                    statements: c.statements,
                    errors: c.errors,
                    opened: c.opened,
                    closed,
                    from_start: c.protocol.seen_from_start(),
                });
            }
            c.bytes_sent = 0;
            c.bytes_received = 0;
            c.statements = 0;
            c.errors = 0;
            c.opened = false;
            c.active = false;
            if closed {
                gone.push(*id);
            }
            if now.saturating_sub(c.last_ns) > IDLE_CHECK_NS {
                c.last_ns = now;
            }
        }
        for id in gone {
            self.connections.remove(&id);
        }
        conn_rows.sort_by_key(|r| (r.process, r.id));
        if !conn_rows.is_empty() {
            out.push((
                CONNECTIONS,
                connections_batch(interval, processes, &conn_rows)?,
            ));
        }
        Ok(out)
    }

    fn take_drops(&mut self) -> Vec<DropCount> {
        vec![
            ("sql", "stream_desync", std::mem::take(&mut self.desyncs)),
            (
                "sql",
                "python_unsupported",
                std::mem::take(&mut self.python_unsupported),
            ),
            (
                "sql",
                "python_frames_unreadable",
                std::mem::take(&mut self.python_unreadable),
            ),
        ]
    }
}
