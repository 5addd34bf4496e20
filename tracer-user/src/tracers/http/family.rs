//! The HTTP family of the socket capture: follows HTTP and uwsgi connections, and charges each
//! server-side request what its serving thread did between the request and its response.
//!
//! The cost of a request: a thread that serves one request at a time (uWSGI and other sync
//! workers) makes every SQL statement and syscall between reading the request and writing the
//! response on the request's behalf. The statements it completes meanwhile are added to the
//! request; its syscalls are the difference of its syscall count (stamped by the kernel on each
//! captured event) between the event that carried the request's first bytes and the one that
//! carried the response's last. When another request starts on the same thread before this one
//! is answered (greenthreads of eventlet interleave on one OS thread; pipelined requests), the
//! requests cannot be told apart: both are left unattributed (null) rather than guessed.

use std::collections::{HashMap, VecDeque};

use arrow_array::RecordBatch;
use tracer_common::sockets::{ConnInfo, DIR_SENT, SIDE_SERVER, SocketEventHeader};

use super::{
    Chunk, Connection, Drops, Exchange, Side, Sniffed,
    route::Routes,
    sniff,
    table::{Cost, RequestKey, Sums, requests_batch},
};
use crate::{
    processes::{ProcessKey, Processes},
    tracers::{
        DropCount, Interval, TracerError,
        sockets::{Family, Notes},
    },
};

/// Distinct routes kept per (process, method); the rest are `other`.
const ROUTES_PER_METHOD: usize = 200;

/// A server-side request in flight: where it started and what its thread did since.
#[derive(Clone, Copy, Debug)]
struct Pending {
    id: u64,
    tid: u32,
    /// The thread's syscall count after the syscall that read the request's first bytes (0:
    /// not counted).
    syscalls: u64,
    sql: u64,
    sql_ns: u64,
    /// Another request started on the thread meanwhile: the cost cannot be told.
    overlapped: bool,
}

/// One connection, once its first request was recognized.
struct Conn {
    process: ProcessKey,
    http: Connection,
    /// Server side: the requests in flight, oldest first.
    pending: VecDeque<Pending>,
}

pub struct HttpFamily {
    /// Whether SQL is traced too (else the SQL columns are null).
    with_sql: bool,
    connections: HashMap<u64, Conn>,
    /// Connections seen that are not HTTP after all, to be released by the kernel.
    rejected: Vec<u64>,
    /// Those connections, so that events already on their way are ignored too.
    not_http: std::collections::HashSet<u64>,
    /// The request each thread serves now: (connection, request id).
    serving: HashMap<(ProcessKey, u32), (u64, u64)>,
    next_id: u64,
    routes: Routes<(ProcessKey, &'static str)>,
    rows: HashMap<RequestKey, Sums>,
    exchanges: Vec<Exchange>,
    unparsed: u64,
    drops: Drops,
}

impl HttpFamily {
    pub fn new(with_sql: bool) -> HttpFamily {
        HttpFamily {
            with_sql,
            connections: HashMap::new(),
            rejected: Vec::new(),
            not_http: std::collections::HashSet::new(),
            serving: HashMap::new(),
            next_id: 0,
            routes: Routes::new(ROUTES_PER_METHOD),
            rows: HashMap::new(),
            exchanges: Vec::new(),
            unparsed: 0,
            drops: Drops::default(),
        }
    }

    /// Makes sure the event's connection exists, created from its first bytes; false while they
    /// do not tell (or once they told it is not HTTP).
    fn known(&mut self, h: &SocketEventHeader, data: &[u8]) -> bool {
        if self.connections.contains_key(&h.conn) {
            return true;
        }
        if self.not_http.contains(&h.conn) {
            return false;
        }
        let accepted = h.side == SIDE_SERVER;
        let http = match sniff(data, h.direction == DIR_SENT, accepted) {
            Sniffed::Partial => return false,
            Sniffed::No => {
                tracing::debug!(
                    conn = h.conn,
                    sent = h.direction == DIR_SENT,
                    len = h.len,
                    head = %String::from_utf8_lossy(&data[..data.len().min(48)]).escape_debug(),
                    "not HTTP after all"
                );
                self.unparsed += 1;
                self.rejected.push(h.conn);
                self.not_http.insert(h.conn);
                return false;
            }
            s => match Connection::from_sniffed(s, accepted) {
                Some(c) => c,
                None => return false,
            },
        };
        let process = ProcessKey {
            tgid: h.tgid,
            generation: h.generation,
        };
        self.connections.insert(
            h.conn,
            Conn {
                process,
                http,
                pending: VecDeque::new(),
            },
        );
        true
    }

    /// `n` requests began on connection `conn` in a chunk its thread received.
    fn requests_started(&mut self, h: &SocketEventHeader, n: usize) {
        let Some(conn) = self.connections.get(&h.conn) else {
            return;
        };
        let process = conn.process;
        for _ in 0..n {
            let id = self.next_id;
            self.next_id += 1;
            let mut overlapped = false;
            if let Some((other_conn, other_id)) =
                self.serving.insert((process, h.tid), (h.conn, id))
                && let Some(other) = self
                    .connections
                    .get_mut(&other_conn)
                    .and_then(|c| c.pending.iter_mut().find(|p| p.id == other_id))
            {
                // The thread's previous request is still unanswered.
                other.overlapped = true;
                overlapped = true;
            }
            if let Some(conn) = self.connections.get_mut(&h.conn) {
                conn.pending.push_back(Pending {
                    id,
                    tid: h.tid,
                    syscalls: h.thread_syscalls,
                    sql: 0,
                    sql_ns: 0,
                    overlapped,
                });
            }
        }
    }

    /// Aggregates completed exchanges; `end` is the event that completed them.
    fn completed(&mut self, conn_id: u64, end_tid: u32, end_syscalls: u64) {
        let exchanges = std::mem::take(&mut self.exchanges);
        let Some(conn) = self.connections.get_mut(&conn_id) else {
            return;
        };
        let process = conn.process;
        let mut costs = Vec::with_capacity(exchanges.len());
        for e in &exchanges {
            let cost = if e.side == Side::Server {
                let pending = conn.pending.pop_front();
                if let Some(p) = pending
                    && self.serving.get(&(process, p.tid)) == Some(&(conn_id, p.id))
                {
                    self.serving.remove(&(process, p.tid));
                }
                pending.filter(|p| !p.overlapped).map(|p| Cost {
                    sql: self.with_sql.then_some((p.sql, p.sql_ns)),
                    syscalls: (p.syscalls != 0 && end_tid == p.tid && end_syscalls >= p.syscalls)
                        .then(|| end_syscalls - p.syscalls),
                })
            } else {
                None
            };
            costs.push(cost);
        }
        for (e, cost) in exchanges.into_iter().zip(costs) {
            let route = self.routes.route((process, e.method), &e.path);
            let key = RequestKey {
                process,
                direction: e.side.name(),
                protocol: e.protocol.name(),
                method: e.method,
                route,
                status: e.status,
                host: e.host.clone(),
            };
            self.rows.entry(key).or_default().add(&e, cost);
        }
    }

    fn count_drops(&mut self, conn_id: u64) {
        if let Some(c) = self.connections.get_mut(&conn_id) {
            self.drops.add(c.http.take_drops());
        }
    }
}

impl Family for HttpFamily {
    fn connection(&mut self, _h: &SocketEventHeader, _info: &ConnInfo) {
        // The endpoints add nothing to the table: the Host header names the server.
    }

    fn data(&mut self, h: &SocketEventHeader, data: &[u8], _notes: &mut Notes) {
        if !self.known(h, data) {
            return;
        }
        let Some(conn) = self.connections.get_mut(&h.conn) else {
            return;
        };
        let sent = h.direction == DIR_SENT;
        let server = conn.http.side() == Side::Server;
        let before = conn.http.in_flight();
        let chunk = Chunk {
            sent,
            time_ns: h.time_ns,
            len: h.len,
            data,
        };
        let mut out = std::mem::take(&mut self.exchanges);
        conn.http.feed(&chunk, &mut out);
        let after = conn.http.in_flight();
        let started = (after + out.len()).saturating_sub(before);
        self.exchanges = out;
        if server && !sent && started > 0 {
            self.requests_started(h, started);
        }
        if !self.exchanges.is_empty() {
            self.completed(h.conn, h.tid, h.thread_syscalls);
        }
        self.count_drops(h.conn);
    }

    fn close(&mut self, h: &SocketEventHeader, _notes: &mut Notes) {
        self.not_http.remove(&h.conn);
        let Some(mut conn) = self.connections.remove(&h.conn) else {
            return;
        };
        let mut out = std::mem::take(&mut self.exchanges);
        conn.http.close(h.time_ns, &mut out);
        self.exchanges = out;
        self.drops.add(conn.http.take_drops());
        self.connections.insert(h.conn, conn);
        if !self.exchanges.is_empty() {
            self.completed(h.conn, h.tid, h.thread_syscalls);
        }
        if let Some(conn) = self.connections.remove(&h.conn) {
            for p in conn.pending {
                if self.serving.get(&(conn.process, p.tid)) == Some(&(h.conn, p.id)) {
                    self.serving.remove(&(conn.process, p.tid));
                }
            }
        }
    }

    fn notes(&mut self, notes: &Notes) {
        for s in &notes.statements {
            let Some(&(conn, id)) = self.serving.get(&(s.process, s.tid)) else {
                continue;
            };
            if let Some(p) = self
                .connections
                .get_mut(&conn)
                .and_then(|c| c.pending.iter_mut().find(|p| p.id == id))
            {
                p.sql += 1;
                p.sql_ns += s.duration_ns;
            }
        }
    }

    fn take_rejected(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.rejected)
    }

    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        // Events of rejected connections sent before the kernel learnt it are drained by now.
        self.not_http.clear();
        // Connections of processes that ended: whatever they left is over.
        let ended: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| !processes.is_live_key(c.process))
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            if let Some(c) = self.connections.remove(&id) {
                self.drops.requests += c.pending.len() as u64;
                self.serving.retain(|_, (conn, _)| *conn != id);
            }
        }
        self.routes.retain(|(p, _)| processes.is_live_key(*p));
        let mut rows: Vec<(RequestKey, Sums)> = self.rows.drain().collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(vec![(
            super::table::TABLE,
            requests_batch(interval, processes, &rows)?,
        )])
    }

    fn take_drops(&mut self) -> Vec<DropCount> {
        // Routes past the limit are not lost: they are counted under `other`.
        let _ = self.routes.take_overflowed();
        let d = std::mem::take(&mut self.drops);
        vec![
            ("http", "unparsed", std::mem::take(&mut self.unparsed)),
            ("http", "stream_desync", d.desyncs),
            ("http", "request_without_response", d.requests),
            ("http", "response_without_request", d.responses),
        ]
    }
}
