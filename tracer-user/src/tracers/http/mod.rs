//! HTTP/1.x and uwsgi exchanges, parsed in user space from the bytes the socket capture copies:
//! the same [`Chunk`]s the SQL parsers get (one syscall's bytes, of which only the first
//! `captured` are present).
//!
//! - [`sniff`] tells from a chunk's first bytes whether it starts an HTTP/1.x request (server or
//!   client side) or a uwsgi request packet (server side). It is strict (known methods, a
//!   well-formed request line, uwsgi vars that parse), so a connection first seen in the middle of
//!   a keep-alive exchange is picked up at its next request and binary protocols are not taken for
//!   HTTP.
//! - [`Connection`] follows one connection's two byte streams and returns completed
//!   [`Exchange`]s: a request (HTTP head, or uwsgi vars packet, and its body) and its response
//!   (always plain HTTP: with uwsgi the application writes it).
//! - [`route`] turns paths into bounded-cardinality route templates.
//!
//! Why responses end where they do: HTTP/1.1 frames a message by its head alone (RFC 9112 §6):
//! no body for HEAD requests and 1xx/204/304 responses, else `Transfer-Encoding: chunked`, else
//! `Content-Length`, else (responses only) the connection's close. So every body is skipped by
//! length — it may lie in an uncaptured stretch — and only chunk-size lines must be seen; a head
//! or chunk-size line that falls in an uncaptured stretch (or bytes that do not parse) loses the
//! framing: that is a desync, and the stream is picked up again where a message must start.

mod body;
mod conn;
mod family;
mod head;
pub mod route;
pub mod sniff;
mod table;
mod uwsgi;

#[cfg(test)]
mod conn_tests;
#[cfg(test)]
mod fuzz_tests;

pub use conn::Connection;
pub use family::HttpFamily;
pub use sniff::{Sniffed, sniff};

use super::{
    Registration, Table,
    views::{Measure, Metric, TableSpec},
};

/// The HTTP family's table and views; its connections are captured by the `sockets`
/// registration, which builds the family.
pub static REGISTRATION: Registration = Registration {
    name: "http",
    selectable: true,
    wanted: |s| s.asked_for("http"),
    probes: &[],
    tables: &[Table {
        name: table::TABLE,
        schema: table::schema,
        summary: Some(TableSpec {
            table: table::TABLE,
            title: "HTTP requests",
            keys: &[
                "direction",
                "http_request_method",
                "http_route",
                "network_protocol_name",
            ],
            counters: &[
                "calls",
                "errors",
                "duration_ns_sum",
                "request_bytes",
                "response_bytes",
                "attributed_calls",
                "sql_statements",
                "syscalls",
            ],
            histogram: Some("duration_histogram"),
            default_sort: "calls",
            rank: 5,
        }),
    }],
    metrics: &[
        Metric {
            id: "http.calls",
            table: table::TABLE,
            title: "HTTP requests",
            keys: &["direction", "http_request_method", "http_route"],
            only: &[],
            except: &[],
            measure: Measure::Counter("calls"),
            threshold: 0.10,
            floor: 20.0,
            new_is_regression: false,
            rank: 9,
        },
        Metric {
            id: "http.errors",
            table: table::TABLE,
            title: "HTTP 5xx responses",
            keys: &["direction", "http_request_method", "http_route"],
            only: &[],
            except: &[],
            measure: Measure::Counter("errors"),
            threshold: 0.10,
            floor: 5.0,
            new_is_regression: false,
            rank: 10,
        },
        Metric {
            id: "http.sql_per_request",
            table: table::TABLE,
            title: "SQL statements per request",
            keys: &["http_request_method", "http_route"],
            only: &[("direction", &["server"])],
            except: &[],
            measure: Measure::Ratio {
                numerator: "sql_statements",
                denominator: "attributed_calls",
            },
            threshold: 0.10,
            floor: 0.5,
            new_is_regression: false,
            rank: 11,
        },
    ],
    drops: None,
    setup: super::no_setup,
    hooks: super::no_hooks,
    build: super::no_collector,
};

/// The chunk type the SQL parsers are fed with: one syscall's bytes on a connection.
pub use super::sql::Chunk;

/// Which end of the connection the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// It accepted the connection: requests are received, responses sent.
    Server,
    /// It connected: requests are sent, responses received.
    Client,
}

impl Side {
    /// The side of a socket the process accepted (true) or connected (false).
    pub fn from_accepted(accepted: bool) -> Side {
        if accepted { Side::Server } else { Side::Client }
    }

    /// Whether a chunk sent (true) or received (false) by the process carries requests.
    pub fn carries_requests(self, sent: bool) -> bool {
        sent == (self == Side::Client)
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// How requests are framed on the connection (responses are HTTP in both cases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Uwsgi,
}

impl Protocol {
    /// `network_protocol_name`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Uwsgi => "uwsgi",
        }
    }
}

/// How the response's end was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// By its framing: no body, Content-Length, last chunk.
    Framed,
    /// By the connection's close (no length given), or the server closed before the framed end
    /// (`truncated`).
    Close { truncated: bool },
    /// The response's framing was lost after its head: it ended where the next response began
    /// (or at the close); its byte count is what the stream carried until then.
    Resync,
}

/// A request and its response, completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub protocol: Protocol,
    pub side: Side,
    /// One of [`METHODS`], or `_OTHER`.
    pub method: &'static str,
    /// The request target's path as sent (absolute-form reduced to its path; query string and
    /// fragment dropped; at most [`MAX_PATH`] bytes). uwsgi: REQUEST_URI, else SCRIPT_NAME +
    /// PATH_INFO.
    pub path: String,
    /// The Host header (uwsgi: HTTP_HOST), at most [`MAX_HOST`] bytes.
    pub host: Option<String>,
    /// The final status (interim 1xx responses excepted, 101 included).
    pub status: u16,
    /// Request bytes on the wire: head (or uwsgi vars packet) and body, chunk framing included.
    pub request_bytes: u64,
    /// Response bytes on the wire, interim responses included.
    pub response_bytes: u64,
    /// When the syscall that carried the request's first byte returned.
    pub start_ns: u64,
    /// When the syscall that carried the request's last byte returned (0: not seen — the
    /// response came first, or the request's framing was lost).
    pub request_end_ns: u64,
    /// When the syscall that carried the response's first byte (interim responses included)
    /// returned.
    pub response_start_ns: u64,
    /// When the syscall that carried the response's last byte returned.
    pub end_ns: u64,
    pub ending: Ending,
}

/// What could not be followed, since the last [`Connection::take_drops`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Times a direction's framing was lost (a head or chunk-size line not captured, bytes that
    /// do not parse): exchanges may be missing or approximate until the stream is picked up.
    pub desyncs: u64,
    /// Requests that got no exchange: their response's head was lost, the connection closed
    /// before an answer, or too many were pipelined.
    pub requests: u64,
    /// Responses for which no request was seen.
    pub responses: u64,
}

impl Drops {
    pub fn add(&mut self, other: Drops) {
        self.desyncs += other.desyncs;
        self.requests += other.requests;
        self.responses += other.responses;
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        *self == Drops::default()
    }
}

/// The methods of RFC 9110 and PATCH; any other is reported as `_OTHER` (OpenTelemetry's rule,
/// which also bounds the method column's cardinality).
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// The name of a method that is not one of [`METHODS`].
pub const OTHER_METHOD: &str = "_OTHER";

/// Paths are kept up to this many bytes (routes are made from them).
pub const MAX_PATH: usize = 1024;
/// Host values are kept up to this many bytes.
pub const MAX_HOST: usize = 256;

/// The known method spelled by `token`, if any.
pub fn known_method(token: &[u8]) -> Option<&'static str> {
    METHODS.iter().copied().find(|m| m.as_bytes() == token)
}

/// Text of at most `max` bytes (invalid UTF-8 replaced), cut at a character boundary.
fn text(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() <= max {
        return s.into_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The path of a request target: absolute-form (`http://host/p`) reduced to its path, the
/// query string and fragment dropped.
fn target_path(target: &[u8]) -> String {
    let mut t = target;
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &t[scheme.len()..];
            t = match rest.iter().position(|&c| c == b'/') {
                Some(i) => &rest[i..],
                None => b"/",
            };
            break;
        }
    }
    let end = t
        .iter()
        .position(|&c| c == b'?' || c == b'#')
        .unwrap_or(t.len());
    text(&t[..end], MAX_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_paths() {
        assert_eq!(target_path(b"/a/b?x=1#f"), "/a/b");
        assert_eq!(
            target_path(b"http://h:80/v2.1/servers?all=1"),
            "/v2.1/servers"
        );
        assert_eq!(target_path(b"HTTPS://h"), "/");
        assert_eq!(target_path(b"*"), "*");
        assert_eq!(target_path(&[b'/'; 2000]).len(), MAX_PATH);
        assert_eq!(text("é".repeat(10).as_bytes(), 5), "éé");
    }

    #[test]
    fn sides_and_methods() {
        assert!(Side::Server.carries_requests(false));
        assert!(Side::Client.carries_requests(true));
        assert_eq!(Side::from_accepted(true), Side::Server);
        assert_eq!(known_method(b"PATCH"), Some("PATCH"));
        assert_eq!(known_method(b"get"), None);
    }
}
