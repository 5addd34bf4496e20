//! The SQL tracer's user side: connections the kernel recognized, their byte streams cut into
//! messages ([`framing`]), parsed per protocol ([`mysql`], [`postgres`]) into statements,
//! fingerprinted ([`fingerprint`]) and aggregated per interval ([`tables`]).

pub mod fingerprint;
pub mod framing;
pub mod mysql;
pub mod postgres;
pub mod stacks;
pub mod tables;
mod tracer;

pub use tracer::SqlFamily;

use super::{
    Registration, Table,
    views::{MIN_LATENCY_SAMPLES, Measure, Metric, TableSpec},
};

/// The SQL family's tables and views; its connections are captured by the `sockets`
/// registration, which builds the family.
pub static REGISTRATION: Registration = Registration {
    name: "sql",
    selectable: true,
    wanted: |s| s.asked_for("sql"),
    probes: &[],
    tables: &[
        Table {
            name: tables::STATEMENTS,
            schema: tables::statements_schema,
            summary: Some(TableSpec {
                table: tables::STATEMENTS,
                title: "SQL statements",
                keys: &["db_system_name", "db_query_text", "db_response_status_code"],
                counters: &[
                    "calls",
                    "errors",
                    "duration_ns_sum",
                    "bytes_sent",
                    "bytes_received",
                ],
                histogram: Some("duration_histogram"),
                default_sort: "calls",
                rank: 3,
            }),
        },
        Table {
            name: tables::CONNECTIONS,
            schema: tables::connections_schema,
            summary: None,
        },
        Table {
            name: stacks::STACKS,
            schema: stacks::schema,
            summary: Some(TableSpec {
                table: stacks::STACKS,
                title: "SQL call sites",
                keys: &[
                    "db_query_text",
                    "code_function_name",
                    "code_file_path",
                    "code_line_number",
                ],
                counters: &["calls", "duration_ns_sum"],
                histogram: None,
                default_sort: "calls",
                rank: 8,
            }),
        },
    ],
    metrics: &[
        Metric {
            id: "sql.calls",
            table: tables::STATEMENTS,
            title: "SQL statements",
            keys: &["db_system_name", "db_query_text"],
            only: &[],
            except: &[],
            measure: Measure::Counter("calls"),
            threshold: 0.10,
            floor: 20.0,
            new_is_regression: true,
            rank: 0,
        },
        Metric {
            id: "sql.errors",
            table: tables::STATEMENTS,
            title: "SQL errors",
            keys: &["db_system_name", "db_query_text"],
            only: &[],
            except: &[],
            measure: Measure::Counter("errors"),
            threshold: 0.10,
            floor: 5.0,
            new_is_regression: false,
            rank: 1,
        },
        Metric {
            id: "sql.p97",
            table: tables::STATEMENTS,
            title: "SQL p97 latency",
            keys: &["db_system_name", "db_query_text"],
            only: &[],
            except: &[],
            measure: Measure::Quantile {
                q: 0.97,
                min_samples: MIN_LATENCY_SAMPLES,
            },
            threshold: 1.0,
            floor: 1e6,
            new_is_regression: false,
            rank: 2,
        },
    ],
    drops: None,
    setup: super::no_setup,
    hooks: super::no_hooks,
    build: super::no_collector,
};

/// What one send or receive syscall moved on a connection.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    /// Sent by the traced process (a request) or received (a response).
    pub sent: bool,
    pub time_ns: u64,
    /// Bytes moved.
    pub len: u32,
    /// The first of them (all, up to the capture size).
    pub data: &'a [u8],
}

/// What a statement asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// SQL text (COM_QUERY, Query, a prepared statement's text at execution).
    Sql(String),
    /// A command without SQL text, named like the protocol names it (PING, INIT_DB, …).
    Command(&'static str),
}

/// A statement that completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub request: Request,
    /// When the request's last byte was sent (the send syscall returned).
    pub start_ns: u64,
    /// When the message that ends the response was received (0 for commands without one).
    pub end_ns: u64,
    /// The error code (MySQL error number, PostgreSQL SQLSTATE) if it failed.
    pub error: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// A wire protocol's parser for one connection.
pub trait Protocol: Send {
    /// Feeds one syscall's bytes; completed statements are appended to `out`.
    fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Statement>);
    /// mysql, mariadb or postgresql, when known.
    fn system(&self) -> Option<&'static str>;
    /// The database (schema) in use, when known.
    fn namespace(&self) -> Option<&str>;
    /// The client said goodbye (COM_QUIT, Terminate).
    fn closed(&self) -> bool;
    /// The connection's start (greeting, startup) was seen.
    fn seen_from_start(&self) -> bool;
    /// Times the stream could not be followed since the last call (statements may be missing).
    fn take_desyncs(&mut self) -> u64;
}

/// Reads a NUL-terminated string at `at`; returns it and the index after the NUL.
pub fn cstr(b: &[u8], at: usize) -> Option<(&str, usize)> {
    let rest = b.get(at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    let s = std::str::from_utf8(&rest[..end]).ok()?;
    Some((s, at + end + 1))
}

/// Text of at most `max` bytes, cut at a character boundary.
pub fn truncated_text(b: &[u8], max: usize) -> String {
    let b = &b[..b.len().min(max)];
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(e) => String::from_utf8_lossy(&b[..e.valid_up_to()]).into_owned(),
    }
}
