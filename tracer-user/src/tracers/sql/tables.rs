//! The SQL tables: `sql_statements` (per interval, process, server and fingerprint) and
//! `sql_connections` (per interval and connection).

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{BooleanBuilder, Int32Builder, Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use tracer_common::hist::BUCKETS;

use crate::{
    processes::{ProcessKey, Processes},
    tracers::{
        Interval, TracerError,
        columns::{
            HistogramColumn, IntervalProcessColumns, batch, histogram, interval_process_fields,
        },
    },
};

pub const STATEMENTS: &str = "sql_statements";
pub const CONNECTIONS: &str = "sql_connections";

/// Where statements went.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Server {
    /// mysql, mariadb or postgresql.
    pub system: &'static str,
    /// IP address, or the Unix socket's path.
    pub address: String,
    /// None for Unix sockets.
    pub port: Option<u16>,
    /// tcp or unix.
    pub transport: &'static str,
    /// The database in use, when known.
    pub namespace: Option<String>,
}

/// One row of `sql_statements` before aggregation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatementKey {
    pub process: ProcessKey,
    pub server: Server,
    pub operation: String,
    pub text: String,
    /// None when the statements succeeded.
    pub status: Option<String>,
    /// The Python call site that sent them (the first frame outside the database stack), when
    /// known.
    pub code: Option<crate::python::Frame>,
}

/// Sums of one [`StatementKey`] over an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementSums {
    pub calls: u64,
    pub errors: u64,
    pub duration_ns: u64,
    pub hist: [u32; BUCKETS],
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// One raw text (`--sql-raw-text` only).
    pub sample: Option<String>,
}

impl Default for StatementSums {
    fn default() -> Self {
        StatementSums {
            calls: 0,
            errors: 0,
            duration_ns: 0,
            hist: [0; BUCKETS],
            bytes_sent: 0,
            bytes_received: 0,
            sample: None,
        }
    }
}

/// One row of `sql_connections`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRow {
    pub process: ProcessKey,
    pub id: u64,
    pub server: Server,
    pub client_address: Option<String>,
    pub client_port: Option<u16>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub statements: u64,
    pub errors: u64,
    pub opened: bool,
    pub closed: bool,
    pub from_start: bool,
}

fn server_fields() -> Vec<Field> {
    vec![
        Field::new("db_system_name", DataType::Utf8, false),
        Field::new("db_namespace", DataType::Utf8, true),
        Field::new("server_address", DataType::Utf8, false),
        Field::new("server_port", DataType::Int32, true),
        Field::new("network_transport", DataType::Utf8, false),
    ]
}

static STATEMENTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = interval_process_fields();
    f.extend(server_fields());
    f.extend([
        Field::new("db_operation_name", DataType::Utf8, false),
        Field::new("db_query_text", DataType::Utf8, false),
        Field::new("db_response_status_code", DataType::Utf8, true),
        Field::new("code_function_name", DataType::Utf8, true),
        Field::new("code_file_path", DataType::Utf8, true),
        Field::new("code_line_number", DataType::Int32, true),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("duration_ns_sum", DataType::Int64, false),
        Field::new("duration_histogram", histogram(), false),
        Field::new("bytes_sent", DataType::Int64, false),
        Field::new("bytes_received", DataType::Int64, false),
        Field::new("db_query_sample", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(f))
});

static CONNECTIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = interval_process_fields();
    f.push(Field::new("connection_id", DataType::Int64, false));
    f.extend(server_fields());
    f.extend([
        Field::new("client_address", DataType::Utf8, true),
        Field::new("client_port", DataType::Int32, true),
        Field::new("bytes_sent", DataType::Int64, false),
        Field::new("bytes_received", DataType::Int64, false),
        Field::new("statements", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("opened", DataType::Boolean, false),
        Field::new("closed", DataType::Boolean, false),
        Field::new("seen_from_start", DataType::Boolean, false),
    ]);
    Arc::new(Schema::new(f))
});

pub fn statements_schema() -> SchemaRef {
    STATEMENTS_SCHEMA.clone()
}

pub fn connections_schema() -> SchemaRef {
    CONNECTIONS_SCHEMA.clone()
}

#[derive(Default)]
struct ServerColumns {
    system: StringBuilder,
    namespace: StringBuilder,
    address: StringBuilder,
    port: Int32Builder,
    transport: StringBuilder,
}

impl ServerColumns {
    fn append(&mut self, s: &Server) {
        self.system.append_value(s.system);
        self.namespace.append_option(s.namespace.as_deref());
        self.address.append_value(&s.address);
        self.port.append_option(s.port.map(i32::from));
        self.transport.append_value(s.transport);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.system.finish()),
            Arc::new(self.namespace.finish()),
            Arc::new(self.address.finish()),
            Arc::new(self.port.finish()),
            Arc::new(self.transport.finish()),
        ]
    }
}

pub fn statements_batch(
    interval: &Interval,
    processes: &Processes,
    rows: &[(StatementKey, StatementSums)],
) -> Result<RecordBatch, TracerError> {
    let mut process = IntervalProcessColumns::default();
    let mut server = ServerColumns::default();
    let (mut op, mut text, mut status) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut calls, mut errors, mut duration) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    let mut hist = HistogramColumn::default();
    let (mut sent, mut received) = (Int64Builder::new(), Int64Builder::new());
    let mut sample = StringBuilder::new();
    let (mut function, mut file, mut line) = (
        StringBuilder::new(),
        StringBuilder::new(),
        Int32Builder::new(),
    );
    for (k, s) in rows {
        process.append(interval, k.process, processes.get(k.process));
        server.append(&k.server);
        op.append_value(&k.operation);
        text.append_value(&k.text);
        status.append_option(k.status.as_deref());
        function.append_option(k.code.as_ref().map(|c| c.function.as_str()));
        file.append_option(k.code.as_ref().map(|c| c.file.as_str()));
        line.append_option(k.code.as_ref().map(|c| c.line));
        calls.append_value(s.calls as i64);
        errors.append_value(s.errors as i64);
        duration.append_value(s.duration_ns as i64);
        hist.append(&s.hist);
        sent.append_value(s.bytes_sent as i64);
        received.append_value(s.bytes_received as i64);
        sample.append_option(s.sample.as_deref());
    }
    let mut columns = process.finish();
    columns.extend(server.finish());
    columns.extend::<[ArrayRef; 13]>([
        Arc::new(op.finish()),
        Arc::new(text.finish()),
        Arc::new(status.finish()),
        Arc::new(function.finish()),
        Arc::new(file.finish()),
        Arc::new(line.finish()),
        Arc::new(calls.finish()),
        Arc::new(errors.finish()),
        Arc::new(duration.finish()),
        hist.finish(),
        Arc::new(sent.finish()),
        Arc::new(received.finish()),
        Arc::new(sample.finish()),
    ]);
    batch(STATEMENTS, statements_schema(), columns)
}

pub fn connections_batch(
    interval: &Interval,
    processes: &Processes,
    rows: &[ConnectionRow],
) -> Result<RecordBatch, TracerError> {
    let mut process = IntervalProcessColumns::default();
    let mut id = Int64Builder::new();
    let mut server = ServerColumns::default();
    let (mut client_address, mut client_port) = (StringBuilder::new(), Int32Builder::new());
    let (mut sent, mut received, mut statements, mut errors) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    let (mut opened, mut closed, mut from_start) = (
        BooleanBuilder::new(),
        BooleanBuilder::new(),
        BooleanBuilder::new(),
    );
    for r in rows {
        process.append(interval, r.process, processes.get(r.process));
        id.append_value(r.id as i64);
        server.append(&r.server);
        client_address.append_option(r.client_address.as_deref());
        client_port.append_option(r.client_port.map(i32::from));
        sent.append_value(r.bytes_sent as i64);
        received.append_value(r.bytes_received as i64);
        statements.append_value(r.statements as i64);
        errors.append_value(r.errors as i64);
        opened.append_value(r.opened);
        closed.append_value(r.closed);
        from_start.append_value(r.from_start);
    }
    let mut columns = process.finish();
    columns.push(Arc::new(id.finish()));
    columns.extend(server.finish());
    columns.extend::<[ArrayRef; 9]>([
        Arc::new(client_address.finish()),
        Arc::new(client_port.finish()),
        Arc::new(sent.finish()),
        Arc::new(received.finish()),
        Arc::new(statements.finish()),
        Arc::new(errors.finish()),
        Arc::new(opened.finish()),
        Arc::new(closed.finish()),
        Arc::new(from_start.finish()),
    ]);
    batch(CONNECTIONS, connections_schema(), columns)
}
