//! The system tables' schemas and rows: `system` (one row per interval), `system_cpu` (per
//! CPU), `system_disk` (per block device), `system_net` (per network interface). Counters are
//! the interval's deltas; gauges (memory, load, processes running, requests in flight) are the
//! value at the interval's end.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{
        BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
        TimestampMicrosecondBuilder,
    },
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::read::{CPU_MODES, DISK_COUNTERS, NET_COUNTERS};
use crate::tracers::{Interval, TracerError, columns};

pub const SYSTEM: &str = "system";
pub const CPU: &str = "system_cpu";
pub const DISK: &str = "system_disk";
pub const NET: &str = "system_net";

/// The CPU mode columns (`cpu_<mode>_ns`), in [`CPU_MODES`] order.
pub const MODES: [&str; CPU_MODES] = [
    "user", "nice", "system", "irq", "softirq", "iowait", "steal", "idle",
];

const SECTOR_BYTES: i64 = 512;
const NS_PER_MS: i64 = 1_000_000;

fn interval_fields() -> Vec<Field> {
    vec![
        Field::new("interval_start", columns::timestamp(), false),
        Field::new("interval_end", columns::timestamp(), false),
    ]
}

fn int64(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}

static SYSTEM_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = interval_fields();
    f.push(Field::new("cpus", DataType::Int32, true));
    f.extend(MODES.map(|m| int64(&format!("cpu_{m}_ns"), true)));
    f.extend(["load_1m", "load_5m", "load_15m"].map(|n| Field::new(n, DataType::Float64, true)));
    f.extend(
        [
            "mem_total_bytes",
            "mem_used_bytes",
            "mem_available_bytes",
            "mem_page_cache_bytes",
            "mem_dirty_bytes",
            "mem_writeback_bytes",
            "swap_used_bytes",
            "context_switches",
            "forks",
        ]
        .map(|n| int64(n, true)),
    );
    f.extend(["procs_running", "procs_blocked"].map(|n| Field::new(n, DataType::Int32, true)));
    f.extend(["tcp_out_segments", "tcp_retransmitted_segments"].map(|n| int64(n, true)));
    Arc::new(Schema::new(f))
});

static CPU_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = interval_fields();
    f.push(Field::new("cpu", DataType::Int32, false));
    f.extend(MODES.map(|m| int64(&format!("{m}_ns"), false)));
    Arc::new(Schema::new(f))
});

static DISK_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = interval_fields();
    f.push(Field::new("device", DataType::Utf8, false));
    f.push(Field::new("partition", DataType::Boolean, false));
    f.extend(["reads", "writes", "read_bytes", "write_bytes"].map(|n| int64(n, false)));
    f.extend(["discards", "flushes"].map(|n| int64(n, true)));
    f.extend(["busy_ns", "in_flight"].map(|n| int64(n, false)));
    Arc::new(Schema::new(f))
});

static NET_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = interval_fields();
    f.push(Field::new("interface", DataType::Utf8, false));
    f.extend(
        [
            "rx_bytes",
            "rx_packets",
            "rx_errors",
            "rx_drops",
            "tx_bytes",
            "tx_packets",
            "tx_errors",
            "tx_drops",
        ]
        .map(|n| int64(n, false)),
    );
    Arc::new(Schema::new(f))
});

pub fn system_schema() -> SchemaRef {
    SYSTEM_SCHEMA.clone()
}

pub fn cpu_schema() -> SchemaRef {
    CPU_SCHEMA.clone()
}

pub fn disk_schema() -> SchemaRef {
    DISK_SCHEMA.clone()
}

pub fn net_schema() -> SchemaRef {
    NET_SCHEMA.clone()
}

/// The interval's bounds, once per row.
#[derive(Default)]
struct Bounds {
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
}

impl Bounds {
    fn append(&mut self, interval: &Interval) {
        self.start.append_value(interval.start_unix_ns / 1000);
        self.end.append_value(interval.end_unix_ns / 1000);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.start.finish().with_timezone("UTC")),
            Arc::new(self.end.finish().with_timezone("UTC")),
        ]
    }
}

fn int64_column(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    let mut b = Int64Builder::new();
    b.extend(values);
    Arc::new(b.finish())
}

fn int32_column(values: impl IntoIterator<Item = Option<i32>>) -> ArrayRef {
    let mut b = Int32Builder::new();
    b.extend(values);
    Arc::new(b.finish())
}

/// The machine-wide row of one interval; `None` where a source could not be read (or was read
/// for the first time after a failure).
#[derive(Default)]
pub struct SystemRow {
    pub cpus: Option<i32>,
    /// CPU time per mode, ns, all CPUs added up.
    pub cpu_ns: Option<[i64; CPU_MODES]>,
    pub load: Option<[f64; 3]>,
    /// total, used, available, page cache, dirty, writeback, swap used.
    pub memory: Option<[i64; 7]>,
    pub context_switches: Option<i64>,
    pub forks: Option<i64>,
    pub procs_running: Option<i32>,
    pub procs_blocked: Option<i32>,
    /// Out segments, retransmitted segments.
    pub tcp: Option<[i64; 2]>,
}

pub fn system_batch(interval: &Interval, row: &SystemRow) -> Result<RecordBatch, TracerError> {
    let mut bounds = Bounds::default();
    bounds.append(interval);
    let mut columns = bounds.finish();
    columns.push(int32_column([row.cpus]));
    columns.extend((0..CPU_MODES).map(|m| int64_column([row.cpu_ns.map(|c| c[m])])));
    for i in 0..3 {
        let mut b = Float64Builder::new();
        b.append_option(row.load.map(|l| l[i]));
        columns.push(Arc::new(b.finish()));
    }
    columns.extend((0..7).map(|i| int64_column([row.memory.map(|m| m[i])])));
    columns.push(int64_column([row.context_switches]));
    columns.push(int64_column([row.forks]));
    columns.push(int32_column([row.procs_running]));
    columns.push(int32_column([row.procs_blocked]));
    columns.extend((0..2).map(|i| int64_column([row.tcp.map(|t| t[i])])));
    columns::batch(SYSTEM, system_schema(), columns)
}

/// One row per CPU: its time per mode, ns.
pub fn cpu_batch(
    interval: &Interval,
    rows: &[(u32, [i64; CPU_MODES])],
) -> Result<RecordBatch, TracerError> {
    let mut bounds = Bounds::default();
    for _ in rows {
        bounds.append(interval);
    }
    let mut columns = bounds.finish();
    columns.push(int32_column(
        rows.iter().map(|(cpu, _)| i32::try_from(*cpu).ok()),
    ));
    columns.extend((0..CPU_MODES).map(|m| int64_column(rows.iter().map(|(_, t)| Some(t[m])))));
    columns::batch(CPU, cpu_schema(), columns)
}

/// One block device's interval.
pub struct DiskRow {
    pub device: String,
    pub partition: bool,
    /// Deltas in [`DISK_COUNTERS`] order (sectors and ms as the kernel counts them).
    pub deltas: [i64; DISK_COUNTERS],
    pub has_discards: bool,
    pub has_flushes: bool,
    pub in_flight: i64,
}

pub fn disk_batch(interval: &Interval, rows: &[DiskRow]) -> Result<RecordBatch, TracerError> {
    let mut bounds = Bounds::default();
    let mut device = StringBuilder::new();
    let mut partition = BooleanBuilder::new();
    for r in rows {
        bounds.append(interval);
        device.append_value(&r.device);
        partition.append_value(r.partition);
    }
    let mut columns = bounds.finish();
    columns.push(Arc::new(device.finish()));
    columns.push(Arc::new(partition.finish()));
    let d = |i: usize, scale: i64| int64_column(rows.iter().map(|r| Some(r.deltas[i] * scale)));
    columns.extend([d(0, 1), d(1, 1), d(2, SECTOR_BYTES), d(3, SECTOR_BYTES)]);
    columns.push(int64_column(
        rows.iter().map(|r| r.has_discards.then_some(r.deltas[4])),
    ));
    columns.push(int64_column(
        rows.iter().map(|r| r.has_flushes.then_some(r.deltas[5])),
    ));
    columns.push(d(6, NS_PER_MS));
    columns.push(int64_column(rows.iter().map(|r| Some(r.in_flight))));
    columns::batch(DISK, disk_schema(), columns)
}

/// One row per interface.
pub fn net_batch(
    interval: &Interval,
    rows: &[(String, [i64; NET_COUNTERS])],
) -> Result<RecordBatch, TracerError> {
    let mut bounds = Bounds::default();
    let mut name = StringBuilder::new();
    for (n, _) in rows {
        bounds.append(interval);
        name.append_value(n);
    }
    let mut columns = bounds.finish();
    columns.push(Arc::new(name.finish()));
    columns.extend((0..NET_COUNTERS).map(|i| int64_column(rows.iter().map(|(_, c)| Some(c[i])))));
    columns::batch(NET, net_schema(), columns)
}
