//! memcached traffic of traced clients (Keystone's and keystonemiddleware's caches), from the same
//! per-syscall captures as SQL ([`Chunk`]): requests paired with their responses in order on each
//! connection (memcached answers in order, pipelined or not), per command: hits and misses (per
//! key for multi-key gets), errors, latency, bytes. Text, meta and binary protocols: [`text`]
//! (with its grammar in [`lines`]) covers classic and meta commands, which share the line
//! syntax, [`binary`] the binary one; this module has what they share and the sniffer.
//!
//! What clients do on the wire (pymemcache 4.0, seen with strace): one `sendall` per command
//! (set_many/delete_many join several commands in one send), `recv(4096)` until the response is
//! complete; sets and deletes are `noreply` by default (no response at all).

// The tracer that feeds these (issue 12's run-loop wiring) lands separately; until then only
// the tests call them.

pub mod binary;
mod family;
pub mod lines;
mod table;
#[cfg(test)]
mod tests;
pub mod text;

pub use family::CacheFamily;

use super::{
    Registration, Table,
    views::{Measure, Metric, TableSpec},
};
use crate::tracers::sql::Chunk;

/// The cache family's table and views; its connections are captured by the `sockets`
/// registration, which builds the family.
pub static REGISTRATION: Registration = Registration {
    name: "cache",
    selectable: true,
    wanted: |s| s.asked_for("cache"),
    probes: &[],
    tables: &[Table {
        name: table::TABLE,
        schema: table::schema,
        summary: Some(TableSpec {
            table: table::TABLE,
            title: "Cache (memcached)",
            keys: &["server_address", "db_operation_name"],
            counters: &[
                "calls",
                "hits",
                "misses",
                "lookups",
                "errors",
                "duration_ns_sum",
                "bytes_sent",
                "bytes_received",
            ],
            histogram: Some("duration_histogram"),
            default_sort: "calls",
            rank: 7,
        }),
    }],
    metrics: &[
        Metric {
            id: "cache.calls",
            table: table::TABLE,
            title: "Cache operations",
            keys: &["db_operation_name"],
            only: &[],
            except: &[],
            measure: Measure::Counter("calls"),
            threshold: 0.10,
            floor: 20.0,
            new_is_regression: false,
            rank: 14,
        },
        Metric {
            id: "cache.miss_ratio",
            table: table::TABLE,
            title: "Cache miss ratio",
            keys: &["db_operation_name"],
            only: &[],
            except: &[],
            measure: Measure::Ratio {
                numerator: "misses",
                denominator: "lookups",
            },
            threshold: 0.10,
            floor: 0.05,
            new_is_regression: false,
            rank: 15,
        },
    ],
    drops: None,
    setup: super::no_setup,
    hooks: super::no_hooks,
    build: super::no_collector,
};

/// One command, completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheOp {
    /// The text protocol's name: get, gets, set, delete, mg, ms… Binary opcodes are named by
    /// their text equivalent (GET, GETQ, GETK, GETKQ → get; SETQ → set; NOOP → noop…).
    pub command: &'static str,
    /// Keys asked for (retrievals), else 1 (0 for commands without a key).
    pub keys: u32,
    /// Retrievals: keys found. delete/incr/decr/touch (and meta): the key existed.
    pub hits: u32,
    /// Retrievals: keys not found; delete/incr/decr/touch: NOT_FOUND.
    pub misses: u32,
    /// ERROR, CLIENT_ERROR, SERVER_ERROR (binary: statuses other than not-found, exists,
    /// not-stored).
    pub error: bool,
    /// When the request's last byte was sent.
    pub start_ns: u64,
    /// When its response ended: the final line (END, STORED…) or, for a quiet request whose
    /// answer is its silence, the response that came after it. None for noreply commands.
    pub end_ns: Option<u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl CacheOp {
    pub fn duration_ns(&self) -> Option<u64> {
        self.end_ns.map(|e| e.saturating_sub(self.start_ns))
    }
}

/// What could not be followed, since the last [`MemcachedConnection::take_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// The request or response stream could not be followed (uncaptured bytes where a line or
    /// header was, a response that fits no pending request).
    pub desyncs: u64,
    /// Requests dropped unanswered by a desync.
    pub lost_requests: u64,
    /// Responses, or received syscalls, with no request to pair with (picked up mid-stream,
    /// after a desync).
    pub orphan_responses: u64,
}

/// The two wire protocols (meta commands are text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Text,
    Binary,
}

/// One connection's parser.
pub enum MemcachedConnection {
    /// Not known until the client's first request.
    Unknown,
    Text(text::TextParser),
    Binary(binary::BinaryParser),
}

impl MemcachedConnection {
    pub fn new(flavor: Option<Flavor>) -> MemcachedConnection {
        match flavor {
            None => MemcachedConnection::Unknown,
            Some(Flavor::Text) => MemcachedConnection::Text(text::TextParser::new()),
            Some(Flavor::Binary) => MemcachedConnection::Binary(binary::BinaryParser::new()),
        }
    }

    #[cfg_attr(not(test), allow(dead_code, reason = "only the tests use it"))]
    pub fn flavor(&self) -> Option<Flavor> {
        match self {
            MemcachedConnection::Unknown => None,
            MemcachedConnection::Text(_) => Some(Flavor::Text),
            MemcachedConnection::Binary(_) => Some(Flavor::Binary),
        }
    }

    /// Feeds one syscall's bytes; completed commands are appended to `out`.
    pub fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<CacheOp>) {
        if let MemcachedConnection::Unknown = self {
            // A server tells the protocol by a request's first byte; so does this.
            if !chunk.sent || chunk.data.is_empty() {
                return;
            }
            let flavor = if chunk.data[0] == binary::REQUEST {
                Flavor::Binary
            } else {
                Flavor::Text
            };
            *self = MemcachedConnection::new(Some(flavor));
        }
        match self {
            MemcachedConnection::Unknown => {}
            MemcachedConnection::Text(p) => p.feed(chunk, out),
            MemcachedConnection::Binary(p) => p.feed(chunk, out),
        }
    }

    /// Requests sent and not yet answered.
    pub fn pending(&self) -> usize {
        match self {
            MemcachedConnection::Unknown => 0,
            MemcachedConnection::Text(p) => p.pending(),
            MemcachedConnection::Binary(p) => p.pending(),
        }
    }

    pub fn take_counts(&mut self) -> CacheCounts {
        match self {
            MemcachedConnection::Unknown => CacheCounts::default(),
            MemcachedConnection::Text(p) => p.take_counts(),
            MemcachedConnection::Binary(p) => p.take_counts(),
        }
    }
}

/// Whether one syscall's captured bytes are memcached: requests when the traced process sent
/// them, responses when it received them. Text: every complete line a well-formed command (or
/// response) with its data block where the syntax says, at least one line that is not a bare
/// number or error. Binary: packets with the request (0x80) or response (0x81) magic, a known
/// opcode, consistent lengths.
pub fn sniff(data: &[u8], sent: bool) -> Option<Flavor> {
    let first = *data.first()?;
    if first == binary::REQUEST || first == binary::RESPONSE {
        let magic = if sent {
            binary::REQUEST
        } else {
            binary::RESPONSE
        };
        return binary::sniff(data, magic).then_some(Flavor::Binary);
    }
    let ok = if sent {
        lines::sniff_requests(data)
    } else {
        lines::sniff_responses(data)
    };
    ok.then_some(Flavor::Text)
}
