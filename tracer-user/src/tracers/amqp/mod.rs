//! AMQP 0-9-1 (RabbitMQ) traffic of traced clients, and oslo.messaging RPC on top of it, from
//! the same per-syscall captures as SQL ([`Chunk`]): one module per layer, so that each is
//! tested alone and none grows past what a reader holds in mind.
//!
//! - [`sniff`]: is a connection AMQP (protocol header at its start, frames mid-stream)?
//! - [`frame`]: bytes → frames, across syscalls, large payloads skipped by size.
//! - [`method`], [`header`]: frames → methods, content headers.
//! - [`connection`]: one connection's frames → messages (method + header + body) and methods.
//! - [`oslo`]: a message body → oslo.messaging's kind, method, `_msg_id`.
//! - [`rpc`]: messages of a process → paired calls, casts, notifications ([`RpcRecord`]).
//!
//! The lead's loop: per connection an [`AmqpConnection`] fed each [`Chunk`]; each
//! [`Event::Message`] goes to one [`RpcTracker`] (keyed by process), which returns records;
//! [`RpcTracker::expire`] each interval, [`RpcTracker::end`] when a process ends.
//!
//! What a py-amqp client does on the wire (oslo.messaging 18.3, kombu 5.7, py-amqp 5.4, seen with
//! strace): a publish is one `sendto` carrying the method, header and body frames; every frame
//! is received as three `recvfrom`s (7-byte header, payload, frame-end), so a delivered
//! message is nine receives; publisher confirms are on (a Basic.Ack comes back per publish).

#[cfg(test)]
mod capture_tests;
pub mod connection;
mod family;
#[cfg(test)]
pub(crate) mod fixture;
pub mod frame;
pub mod header;
pub mod method;
pub mod oslo;
pub mod rpc;
mod table;
#[cfg(test)]
mod tests;

pub use family::RpcFamily;

use super::{
    Registration, Table,
    views::{Measure, Metric, TableSpec},
};

/// The RPC family's table and views; its connections are captured by the `sockets`
/// registration, which builds the family.
pub static REGISTRATION: Registration = Registration {
    name: "rpc",
    selectable: true,
    wanted: |s| s.asked_for("rpc"),
    probes: &[],
    tables: &[Table {
        name: table::TABLE,
        schema: table::schema,
        summary: Some(TableSpec {
            table: table::TABLE,
            title: "RPC (AMQP / oslo.messaging)",
            keys: &[
                "direction",
                "rpc_kind",
                "rpc_method",
                "messaging_rabbitmq_routing_key",
            ],
            counters: &[
                "calls",
                "errors",
                "timeouts",
                "replied_calls",
                "duration_ns_sum",
                "bytes_sent",
                "bytes_received",
            ],
            histogram: Some("duration_histogram"),
            default_sort: "calls",
            rank: 6,
        }),
    }],
    metrics: &[
        Metric {
            id: "rpc.calls",
            table: table::TABLE,
            title: "RPC messages per method",
            keys: &["direction", "rpc_kind", "rpc_method"],
            only: &[],
            except: &[],
            measure: Measure::Counter("calls"),
            threshold: 0.10,
            floor: 20.0,
            new_is_regression: false,
            rank: 12,
        },
        Metric {
            id: "rpc.errors",
            table: table::TABLE,
            title: "RPC calls that failed",
            keys: &["direction", "rpc_kind", "rpc_method"],
            only: &[],
            except: &[],
            measure: Measure::Counter("errors"),
            threshold: 0.10,
            floor: 5.0,
            new_is_regression: false,
            rank: 13,
        },
    ],
    drops: None,
    setup: super::no_setup,
    hooks: super::no_hooks,
    build: super::no_collector,
};

pub use connection::{AmqpConnection, Event};
#[cfg(test)]
pub use connection::{Counts, Message};
#[cfg(test)]
pub use oslo::Kind;
#[cfg(test)]
pub use rpc::{Direction, RpcCounts};
pub use rpc::{RpcRecord, RpcTracker};

#[cfg(test)]
use crate::tracers::sql::Chunk;
use frame::{Check, PROTOCOL_HEADER};

/// How a connection was recognized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "a capture picks AMQP by port or header; the tests check mid-stream recognition"
    )
)]
pub enum Sniffed {
    /// The client's protocol header: the connection's start.
    Start,
    /// Whole frames (a valid header and a 0xCE frame-end where the size puts it).
    MidStream,
}

/// Whether one syscall's captured bytes are AMQP 0-9-1: the protocol header, or frames from
/// its first byte with at least one frame-end checked, method ids that exist, content headers
/// of the basic class. A receive of a lone 7-byte frame header (py-amqp's way) cannot be told
/// apart from other bytes: the next syscalls will be.
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "a capture picks AMQP by port or header; the tests check mid-stream recognition"
    )
)]
pub fn sniff(data: &[u8]) -> Option<Sniffed> {
    if data.starts_with(PROTOCOL_HEADER) {
        return Some(Sniffed::Start);
    }
    let mut at = 0;
    let mut checked = 0;
    // A header cut by the end of the bytes is no evidence either way.
    while data.len() - at >= 7 {
        match frame::check(&data[at..]) {
            Check::Frame(n) => {
                checked += 1;
                at += n;
            }
            Check::Start => break,
            Check::No => return None,
        }
    }
    (checked > 0).then_some(Sniffed::MidStream)
}

#[cfg(test)]
pub(crate) fn chunk(sent: bool, time_ns: u64, data: &[u8]) -> Chunk<'_> {
    Chunk {
        sent,
        time_ns,
        len: data.len() as u32,
        data,
    }
}
