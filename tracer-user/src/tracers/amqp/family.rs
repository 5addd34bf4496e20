//! The RPC family of the socket capture: AMQP 0-9-1 connections of traced processes, their
//! messages turned into oslo.messaging calls, casts and notifications, each call paired with its
//! reply (per process: a client publishes and consumes on different connections).

use std::collections::HashMap;

use arrow_array::RecordBatch;
use tracer_common::sockets::{ConnInfo, DIR_SENT, SocketEventHeader};

use super::{
    AmqpConnection, Event, RpcRecord, RpcTracker,
    table::{RpcKey, RpcSums, rpc_batch, template_key},
};
use crate::{
    processes::{ProcessKey, Processes},
    tracers::{
        DropCount, Interval, TracerError,
        sockets::{Family, Notes},
        sql::Chunk,
    },
};

/// Calls kept awaiting their reply, per side, over all processes.
const MAX_PENDING: usize = 100_000;
/// Bytes of a message body kept to read its oslo.messaging fields.
const BODY_CAP: usize = 64 << 10;
/// A call whose reply has not come this long after is flushed as timed out (oslo.messaging's
/// default rpc_response_timeout is 60 s).
const REPLY_TIMEOUT_NS: u64 = 120_000_000_000;

struct Conn {
    process: ProcessKey,
    amqp: AmqpConnection,
}

pub struct RpcFamily {
    connections: HashMap<u64, Conn>,
    tracker: RpcTracker<ProcessKey>,
    rows: HashMap<RpcKey, RpcSums>,
    events: Vec<Event>,
    records: Vec<RpcRecord<ProcessKey>>,
    desyncs: u64,
    skipped_frames: u64,
}

impl RpcFamily {
    pub fn new() -> RpcFamily {
        RpcFamily {
            connections: HashMap::new(),
            tracker: RpcTracker::new(MAX_PENDING),
            rows: HashMap::new(),
            events: Vec::new(),
            records: Vec::new(),
            desyncs: 0,
            skipped_frames: 0,
        }
    }

    fn aggregate(&mut self) {
        for r in self.records.drain(..) {
            let key = RpcKey {
                process: r.key,
                direction: r.direction.as_str(),
                exchange: template_key(&r.exchange),
                routing_key: template_key(&r.routing_key),
                method: r.method.clone(),
                kind: r.kind.as_str(),
            };
            self.rows.entry(key).or_default().add(&r);
        }
    }

    /// The event's connection; a new one starts at the protocol header, or mid-stream.
    fn conn(&mut self, h: &SocketEventHeader, data: &[u8]) -> &mut Conn {
        self.connections.entry(h.conn).or_insert_with(|| Conn {
            process: ProcessKey {
                tgid: h.tgid,
                generation: h.generation,
            },
            amqp: AmqpConnection::new(data.starts_with(super::frame::PROTOCOL_HEADER), BODY_CAP),
        })
    }
}

impl Family for RpcFamily {
    fn connection(&mut self, _h: &SocketEventHeader, _info: &ConnInfo) {
        // The broker's address adds nothing to the table: exchanges and routing keys name the
        // destination. The connection is made at its first data event.
    }

    fn data(&mut self, h: &SocketEventHeader, data: &[u8], _notes: &mut Notes) {
        let mut events = std::mem::take(&mut self.events);
        let conn = self.conn(h, data);
        let process = conn.process;
        conn.amqp.feed(
            &Chunk {
                sent: h.direction == DIR_SENT,
                time_ns: h.time_ns,
                len: h.len,
                data,
            },
            &mut events,
        );
        let counts = conn.amqp.take_counts();
        self.desyncs += counts.desyncs;
        self.skipped_frames += counts.skipped_frames;
        for e in events.drain(..) {
            if let Event::Message(m) = e {
                self.tracker.message(&process, &m, &mut self.records);
            }
        }
        self.events = events;
        self.aggregate();
    }

    fn close(&mut self, h: &SocketEventHeader, _notes: &mut Notes) {
        self.connections.remove(&h.conn);
    }

    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let now = crate::kernel::clock_ns(libc::CLOCK_MONOTONIC);
        self.tracker
            .expire(now, REPLY_TIMEOUT_NS, &mut self.records);
        let ended: Vec<ProcessKey> = self
            .connections
            .values()
            .map(|c| c.process)
            .filter(|p| !processes.is_live_key(*p))
            .collect();
        for p in &ended {
            self.tracker.end(p, now, &mut self.records);
        }
        self.connections
            .retain(|_, c| processes.is_live_key(c.process));
        self.aggregate();
        let mut rows: Vec<(RpcKey, RpcSums)> = self.rows.drain().collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(vec![(
            super::table::TABLE,
            rpc_batch(interval, processes, &rows)?,
        )])
    }

    fn take_drops(&mut self) -> Vec<DropCount> {
        let c = self.tracker.take_counts();
        vec![
            ("rpc", "stream_desync", std::mem::take(&mut self.desyncs)),
            (
                "rpc",
                "frames_skipped",
                std::mem::take(&mut self.skipped_frames),
            ),
            ("rpc", "pending_table_full", c.overflow),
        ]
    }
}
