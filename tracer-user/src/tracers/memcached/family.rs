//! The cache family of the socket capture: memcached connections of traced processes (text,
//! meta and binary protocols), each request paired with its response.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use tracer_common::sockets::{ConnInfo, DIR_SENT, SocketEventHeader};

use super::{
    CacheOp, MemcachedConnection,
    table::{CacheKey, CacheSums, cache_batch},
};
use crate::{
    processes::{ProcessKey, Processes},
    tracers::{
        DropCount, Interval, TracerError,
        sockets::{Endpoints, Family, Notes},
        sql::Chunk,
    },
};

struct Conn {
    process: ProcessKey,
    server: Endpoints,
    memcached: MemcachedConnection,
    /// Its first bytes were seen to be memcached (a TCP connection to a memcached port is).
    verified: bool,
}

pub struct CacheFamily {
    connections: HashMap<u64, Conn>,
    /// Unix-socket connections whose first bytes were not memcached after all.
    rejected: Vec<u64>,
    unparsed: u64,
    rows: HashMap<CacheKey, CacheSums>,
    ops: Vec<CacheOp>,
    desyncs: u64,
    lost_requests: u64,
    orphan_responses: u64,
}

impl CacheFamily {
    pub fn new() -> CacheFamily {
        CacheFamily {
            connections: HashMap::new(),
            rejected: Vec::new(),
            unparsed: 0,
            rows: HashMap::new(),
            ops: Vec::new(),
            desyncs: 0,
            lost_requests: 0,
            orphan_responses: 0,
        }
    }

    fn count(&mut self, conn: u64) {
        if let Some(c) = self.connections.get_mut(&conn) {
            let counts = c.memcached.take_counts();
            self.desyncs += counts.desyncs;
            self.lost_requests += counts.lost_requests;
            self.orphan_responses += counts.orphan_responses;
        }
    }
}

/// Endpoints of a connection whose Connection event was lost: unknown.
fn unknown_server() -> Endpoints {
    Endpoints {
        server_address: "?".to_owned(),
        server_port: None,
        client_address: None,
        client_port: None,
        transport: "tcp",
    }
}

impl Family for CacheFamily {
    fn connection(&mut self, h: &SocketEventHeader, info: &ConnInfo) {
        self.connections.insert(
            h.conn,
            Conn {
                process: ProcessKey {
                    tgid: h.tgid,
                    generation: h.generation,
                },
                server: Endpoints::of(h, info),
                memcached: MemcachedConnection::new(None),
                verified: h.family != 1,
            },
        );
    }

    fn data(&mut self, h: &SocketEventHeader, data: &[u8], _notes: &mut Notes) {
        let conn = self.connections.entry(h.conn).or_insert_with(|| Conn {
            process: ProcessKey {
                tgid: h.tgid,
                generation: h.generation,
            },
            server: unknown_server(),
            memcached: MemcachedConnection::new(None),
            verified: h.family != 1,
        });
        let sent = h.direction == DIR_SENT;
        if !conn.verified {
            // The kernel's sniff of a Unix socket's first message is short: the parser's is not.
            if super::sniff(data, sent).is_none() {
                self.connections.remove(&h.conn);
                self.rejected.push(h.conn);
                self.unparsed += 1;
                return;
            }
            conn.verified = true;
        }
        let mut ops = std::mem::take(&mut self.ops);
        conn.memcached.feed(
            &Chunk {
                sent,
                time_ns: h.time_ns,
                len: h.len,
                data,
            },
            &mut ops,
        );
        let (process, server) = (conn.process, &conn.server);
        for op in ops.drain(..) {
            let key = CacheKey {
                process,
                server_address: server.server_address.clone(),
                server_port: server.server_port,
                transport: server.transport,
                command: op.command,
            };
            self.rows.entry(key).or_default().add(&op);
        }
        self.ops = ops;
        self.count(h.conn);
    }

    fn close(&mut self, h: &SocketEventHeader, _notes: &mut Notes) {
        self.count(h.conn);
        if let Some(c) = self.connections.remove(&h.conn) {
            self.lost_requests += c.memcached.pending() as u64;
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
        self.connections
            .retain(|_, c| processes.is_live_key(c.process));
        let mut rows: Vec<(CacheKey, CacheSums)> = self.rows.drain().collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(vec![(
            super::table::TABLE,
            cache_batch(interval, processes, &rows)?,
        )])
    }

    fn take_drops(&mut self) -> Vec<DropCount> {
        vec![
            ("cache", "unparsed", std::mem::take(&mut self.unparsed)),
            ("cache", "stream_desync", std::mem::take(&mut self.desyncs)),
            (
                "cache",
                "request_without_response",
                std::mem::take(&mut self.lost_requests),
            ),
            (
                "cache",
                "response_without_request",
                std::mem::take(&mut self.orphan_responses),
            ),
        ]
    }
}
