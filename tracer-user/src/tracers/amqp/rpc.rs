//! oslo.messaging RPC over the messages of a process's AMQP connections: calls paired with
//! their replies, casts, notifications, into completed [`RpcRecord`]s.
//!
//! Pairing is by `_msg_id` per process, not per connection: oslo.messaging publishes a call on
//! one connection (from its send pool) and consumes replies on another (the reply_<uuid> queue's
//! listener); a server consumes the call on its listener's connection and publishes the reply
//! on a pooled one. So:
//! - client: Basic.Publish of a call → Basic.Deliver of the reply with the same `_msg_id`;
//!   duration from the publish's last byte sent to the reply's last byte received;
//! - server: Basic.Deliver of a call → Basic.Publish of its reply; duration from the call's last
//!   byte received to the reply's last byte sent (the handling time, queueing in the server
//!   included).
//!
//! A reply with `"ending": false` is a call-monitor heartbeat and completes nothing. Calls whose
//! reply is not seen within the timeout are flushed as `timed_out`; replies whose call was not
//! seen (picked up mid-call, `_msg_id` cut off) are records of kind `reply`. Message bodies are
//! read for these fields and dropped.

use std::{collections::HashMap, hash::Hash};

use super::{
    connection::Message,
    method::Method,
    oslo::{self, Kind},
};

/// Which end of the RPC the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// It published the call, cast or notification.
    Client,
    /// It received it.
    Server,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Client => "client",
            Direction::Server => "server",
        }
    }
}

/// One completed RPC message or exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcRecord<K> {
    /// Whose (a process key).
    pub key: K,
    pub direction: Direction,
    /// Of the call, cast or notification (for a call: as published by the client, as delivered
    /// to the server); of the reply itself for an unpaired reply.
    pub exchange: String,
    pub routing_key: String,
    /// The RPC method, the notification's event_type, or empty when unknown.
    pub method: String,
    pub kind: Kind,
    /// A reply carrying a `failure` (the remote method raised).
    pub error: bool,
    /// A call whose reply did not come within the timeout (or before the process ended).
    pub timed_out: bool,
    /// Call → reply, for paired calls.
    pub duration_ns: Option<u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// When it completed (the reply, the message itself, or the flush).
    pub time_ns: u64,
}

/// What the tracker could not pair or keep, since the last [`RpcTracker::take_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcCounts {
    /// Calls not kept for pairing because the pending table was full (recorded unpaired).
    pub overflow: u64,
    /// Call-monitor heartbeats (replies with `"ending": false`).
    pub heartbeats: u64,
    /// A second call with a `_msg_id` already pending (the first is recorded timed out).
    pub duplicate_ids: u64,
    /// Basic.Return: a mandatory publish the broker could not route (an oslo.messaging reply
    /// whose reply queue is gone).
    pub returned: u64,
}

struct Pending {
    exchange: String,
    routing_key: String,
    method: String,
    at_ns: u64,
    bytes: u64,
}

/// The pending calls of every traced process.
pub struct RpcTracker<K> {
    /// Calls published, awaiting their reply's delivery.
    client: HashMap<(K, String), Pending>,
    /// Calls delivered, awaiting their reply's publish.
    server: HashMap<(K, String), Pending>,
    max_pending: usize,
    counts: RpcCounts,
}

impl<K: Clone + Eq + Hash> RpcTracker<K> {
    /// `max_pending`: calls kept awaiting a reply, per side, over all processes.
    pub fn new(max_pending: usize) -> RpcTracker<K> {
        RpcTracker {
            client: HashMap::new(),
            server: HashMap::new(),
            max_pending,
            counts: RpcCounts::default(),
        }
    }

    /// Calls awaiting a reply (client and server side).
    #[cfg_attr(not(test), allow(dead_code, reason = "only the tests use it"))]
    pub fn pending(&self) -> usize {
        self.client.len() + self.server.len()
    }

    pub fn take_counts(&mut self) -> RpcCounts {
        std::mem::take(&mut self.counts)
    }

    /// Takes one message of process `key`'s connections; completed records go to `out`.
    pub fn message(&mut self, key: &K, msg: &Message, out: &mut Vec<RpcRecord<K>>) {
        if matches!(msg.method, Method::Return { .. }) {
            self.counts.returned += 1;
            return;
        }
        let o = oslo::parse(&msg.body).unwrap_or_default();
        let kind = o.kind(msg.properties.expiration.is_some());
        let direction = if msg.sent {
            Direction::Client
        } else {
            Direction::Server
        };
        let record = |kind: Kind, method: String, error: bool| RpcRecord {
            key: key.clone(),
            direction,
            exchange: msg.exchange().to_owned(),
            routing_key: msg.routing_key().to_owned(),
            method,
            kind,
            error,
            timed_out: false,
            duration_ns: None,
            bytes_sent: if msg.sent { msg.wire_bytes } else { 0 },
            bytes_received: if msg.sent { 0 } else { msg.wire_bytes },
            time_ns: msg.end_ns,
        };
        match kind {
            Kind::Call => {
                let method = o.method.unwrap_or_default();
                let Some(id) = o.msg_id else {
                    out.push(record(Kind::Call, method, false));
                    return;
                };
                let table = if msg.sent {
                    &mut self.client
                } else {
                    &mut self.server
                };
                if table.len() >= self.max_pending {
                    self.counts.overflow += 1;
                    out.push(record(Kind::Call, method, false));
                    return;
                }
                let pending = Pending {
                    exchange: msg.exchange().to_owned(),
                    routing_key: msg.routing_key().to_owned(),
                    method,
                    at_ns: msg.end_ns,
                    bytes: msg.wire_bytes,
                };
                if let Some(old) = table.insert((key.clone(), id), pending) {
                    self.counts.duplicate_ids += 1;
                    out.push(unanswered(key.clone(), direction, old, msg.end_ns));
                }
            }
            Kind::Reply => {
                if o.ending == Some(false) {
                    self.counts.heartbeats += 1;
                    return;
                }
                // A reply published answers a call this process received, and the other way.
                let (table, call_direction) = if msg.sent {
                    (&mut self.server, Direction::Server)
                } else {
                    (&mut self.client, Direction::Client)
                };
                let call = o.msg_id.and_then(|id| table.remove(&(key.clone(), id)));
                let Some(call) = call else {
                    // Unpaired: still the call's side (a reply received means a client).
                    let mut r = record(Kind::Reply, String::new(), o.failure);
                    r.direction = call_direction;
                    out.push(r);
                    return;
                };
                let (bytes_sent, bytes_received) = if msg.sent {
                    (msg.wire_bytes, call.bytes)
                } else {
                    (call.bytes, msg.wire_bytes)
                };
                out.push(RpcRecord {
                    key: key.clone(),
                    direction: call_direction,
                    exchange: call.exchange,
                    routing_key: call.routing_key,
                    method: call.method,
                    kind: Kind::Call,
                    error: o.failure,
                    timed_out: false,
                    duration_ns: Some(msg.end_ns.saturating_sub(call.at_ns)),
                    bytes_sent,
                    bytes_received,
                    time_ns: msg.end_ns,
                });
            }
            Kind::Cast => out.push(record(Kind::Cast, o.method.unwrap_or_default(), false)),
            Kind::Notification => out.push(record(
                Kind::Notification,
                o.event_type.unwrap_or_default(),
                false,
            )),
            Kind::Other => out.push(record(Kind::Other, String::new(), false)),
        }
    }

    /// Flushes calls that have waited more than `timeout_ns` at `now_ns` as timed out.
    pub fn expire(&mut self, now_ns: u64, timeout_ns: u64, out: &mut Vec<RpcRecord<K>>) {
        let old = |p: &Pending| now_ns.saturating_sub(p.at_ns) > timeout_ns;
        self.flush(|_, p| old(p), now_ns, out);
    }

    /// Flushes the calls of a process that ended as timed out (their replies cannot come).
    pub fn end(&mut self, key: &K, now_ns: u64, out: &mut Vec<RpcRecord<K>>) {
        self.flush(|k, _| k == key, now_ns, out);
    }

    fn flush(
        &mut self,
        mut which: impl FnMut(&K, &Pending) -> bool,
        now_ns: u64,
        out: &mut Vec<RpcRecord<K>>,
    ) {
        for (table, direction) in [
            (&mut self.client, Direction::Client),
            (&mut self.server, Direction::Server),
        ] {
            let gone: Vec<(K, String)> = table
                .iter()
                .filter(|((k, _), p)| which(k, p))
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                if let Some(p) = table.remove(&id) {
                    out.push(unanswered(id.0, direction, p, now_ns));
                }
            }
        }
    }
}

fn unanswered<K>(key: K, direction: Direction, p: Pending, now_ns: u64) -> RpcRecord<K> {
    let (bytes_sent, bytes_received) = match direction {
        Direction::Client => (p.bytes, 0),
        Direction::Server => (0, p.bytes),
    };
    RpcRecord {
        key,
        direction,
        exchange: p.exchange,
        routing_key: p.routing_key,
        method: p.method,
        kind: Kind::Call,
        error: false,
        timed_out: true,
        duration_ns: None,
        bytes_sent,
        bytes_received,
        time_ns: now_ns,
    }
}
