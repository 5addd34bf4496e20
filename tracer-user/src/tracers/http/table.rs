//! The `http_requests` table: per interval, process, direction, protocol, method, route, status
//! and host: requests, errors, latency, bytes, and what the server-side requests cost.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int32Builder, Int64Builder, ListBuilder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use tracer_common::hist::{self, BUCKETS};

use super::Exchange;
use crate::{
    processes::{ProcessKey, Processes},
    tracers::{
        Interval, TracerError,
        columns::{
            HistogramColumn, IntervalProcessColumns, batch, histogram, interval_process_fields,
        },
    },
};

pub const TABLE: &str = "http_requests";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = interval_process_fields();
    fields.extend([
        Field::new("direction", DataType::Utf8, false),
        Field::new("network_protocol_name", DataType::Utf8, false),
        Field::new("http_request_method", DataType::Utf8, false),
        Field::new("http_route", DataType::Utf8, false),
        Field::new("http_response_status_code", DataType::Int32, false),
        Field::new("server_address", DataType::Utf8, true),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("duration_ns_sum", DataType::Int64, false),
        Field::new("duration_histogram", histogram(), false),
        Field::new("request_bytes", DataType::Int64, false),
        Field::new("response_bytes", DataType::Int64, false),
        Field::new("attributed_calls", DataType::Int64, false),
        Field::new("sql_statements", DataType::Int64, true),
        Field::new("sql_duration_ns_sum", DataType::Int64, true),
        Field::new("sql_statements_histogram", histogram(), true),
        Field::new("syscalls", DataType::Int64, true),
    ]);
    Arc::new(Schema::new(fields))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// One row's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey {
    pub process: ProcessKey,
    pub direction: &'static str,
    pub protocol: &'static str,
    pub method: &'static str,
    pub route: String,
    pub status: u16,
    pub host: Option<String>,
}

/// What one server-side request cost its thread, when it can be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// (statements, their summed latency); None when SQL is not traced.
    pub sql: Option<(u64, u64)>,
    /// None when the thread's syscall count could not be read at both ends.
    pub syscalls: Option<u64>,
}

/// One row's sums.
#[derive(Clone, Debug, Default)]
pub struct Sums {
    calls: u64,
    errors: u64,
    duration_ns: u64,
    hist: Option<[u32; BUCKETS]>,
    request_bytes: u64,
    response_bytes: u64,
    attributed: u64,
    sql: Option<u64>,
    sql_ns: Option<u64>,
    sql_hist: Option<[u32; BUCKETS]>,
    /// Syscalls of the attributed requests, while every one of them had its count.
    syscalls: Option<u64>,
    syscalls_known: u64,
}

impl Sums {
    pub fn add(&mut self, e: &Exchange, cost: Option<Cost>) {
        let duration = e.end_ns.saturating_sub(e.start_ns);
        self.calls += 1;
        if e.status >= 500 {
            self.errors += 1;
        }
        self.duration_ns += duration;
        self.hist.get_or_insert([0; BUCKETS])[hist::bucket(duration)] += 1;
        self.request_bytes += e.request_bytes;
        self.response_bytes += e.response_bytes;
        let Some(cost) = cost else {
            return;
        };
        self.attributed += 1;
        if let Some((n, ns)) = cost.sql {
            *self.sql.get_or_insert(0) += n;
            *self.sql_ns.get_or_insert(0) += ns;
            self.sql_hist.get_or_insert([0; BUCKETS])[hist::bucket(n)] += 1;
        }
        if let Some(n) = cost.syscalls {
            *self.syscalls.get_or_insert(0) += n;
            self.syscalls_known += 1;
        }
    }

    /// Syscalls, when every attributed request had its count.
    fn syscalls(&self) -> Option<u64> {
        self.syscalls
            .filter(|_| self.syscalls_known == self.attributed)
    }
}

pub fn requests_batch(
    interval: &Interval,
    processes: &Processes,
    rows: &[(RequestKey, Sums)],
) -> Result<RecordBatch, TracerError> {
    let mut process = IntervalProcessColumns::default();
    let (mut direction, mut protocol, mut method, mut route) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut status = Int32Builder::new();
    let mut host = StringBuilder::new();
    let (mut calls, mut errors, mut duration) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    let (mut request_bytes, mut response_bytes) = (Int64Builder::new(), Int64Builder::new());
    let mut hist = HistogramColumn::default();
    let (mut attributed, mut sql, mut sql_ns, mut syscalls) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    let mut sql_hist = ListBuilder::new(Int64Builder::new());
    for (k, s) in rows {
        process.append(interval, k.process, processes.get(k.process));
        direction.append_value(k.direction);
        protocol.append_value(k.protocol);
        method.append_value(k.method);
        route.append_value(&k.route);
        status.append_value(i32::from(k.status));
        host.append_option(k.host.as_deref());
        calls.append_value(s.calls as i64);
        errors.append_value(s.errors as i64);
        duration.append_value(s.duration_ns as i64);
        request_bytes.append_value(s.request_bytes as i64);
        response_bytes.append_value(s.response_bytes as i64);
        hist.append(&s.hist.unwrap_or([0; BUCKETS]));
        attributed.append_value(s.attributed as i64);
        sql.append_option(s.sql.filter(|_| s.attributed > 0).map(|v| v as i64));
        sql_ns.append_option(s.sql_ns.filter(|_| s.attributed > 0).map(|v| v as i64));
        match s.sql_hist.filter(|_| s.attributed > 0) {
            Some(h) => {
                sql_hist.values().append_slice(&h.map(i64::from));
                sql_hist.append(true);
            }
            None => sql_hist.append(false),
        }
        syscalls.append_option(s.syscalls().map(|v| v as i64));
    }
    let mut columns = process.finish();
    columns.extend::<[ArrayRef; 17]>([
        Arc::new(direction.finish()),
        Arc::new(protocol.finish()),
        Arc::new(method.finish()),
        Arc::new(route.finish()),
        Arc::new(status.finish()),
        Arc::new(host.finish()),
        Arc::new(calls.finish()),
        Arc::new(errors.finish()),
        Arc::new(duration.finish()),
        hist.finish(),
        Arc::new(request_bytes.finish()),
        Arc::new(response_bytes.finish()),
        Arc::new(attributed.finish()),
        Arc::new(sql.finish()),
        Arc::new(sql_ns.finish()),
        Arc::new(sql_hist.finish()),
        Arc::new(syscalls.finish()),
    ]);
    batch(TABLE, schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracers::http::{Ending, Protocol, Side};

    fn exchange(status: u16, ns: u64) -> Exchange {
        Exchange {
            protocol: Protocol::Http,
            side: Side::Server,
            method: "GET",
            path: "/items/1".into(),
            host: None,
            status,
            request_bytes: 100,
            response_bytes: 200,
            start_ns: 1_000,
            request_end_ns: 1_000,
            response_start_ns: 1_000 + ns,
            end_ns: 1_000 + ns,
            ending: Ending::Framed,
        }
    }

    #[test]
    fn sums_keep_costs_only_for_attributed_requests() {
        let mut s = Sums::default();
        let cost = |sql, syscalls| Cost {
            sql: Some((sql, sql * 10)),
            syscalls,
        };
        s.add(&exchange(200, 500), Some(cost(3, Some(40))));
        s.add(&exchange(200, 700), Some(cost(5, Some(60))));
        s.add(&exchange(500, 900), None);
        assert_eq!((s.calls, s.errors, s.duration_ns), (3, 1, 2100));
        assert_eq!(s.attributed, 2);
        assert_eq!((s.sql, s.sql_ns), (Some(8), Some(80)));
        assert_eq!(s.syscalls(), Some(100));
        let h = s.sql_hist.unwrap();
        assert_eq!((h[hist::bucket(3)], h[hist::bucket(5)]), (1, 1));
        // One attributed request without a syscall count: the sum would be partial.
        s.add(&exchange(200, 100), Some(cost(1, None)));
        assert_eq!(s.syscalls(), None);
    }
}
