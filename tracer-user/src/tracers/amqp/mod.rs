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

// The tracer that feeds these (issue 12's run-loop wiring) lands separately; until then only
// the tests call them.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

#[cfg(test)]
mod capture_tests;
pub mod connection;
#[cfg(test)]
pub(crate) mod fixture;
pub mod frame;
pub mod header;
pub mod method;
pub mod oslo;
pub mod rpc;
#[cfg(test)]
mod tests;

pub use connection::{AmqpConnection, Counts, Event, Message};
pub use oslo::Kind;
pub use rpc::{Direction, RpcCounts, RpcRecord, RpcTracker};

#[cfg(test)]
use crate::tracers::sql::Chunk;
use frame::{Check, PROTOCOL_HEADER};

/// How a connection was recognized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
