//! The `blockio` table: per interval, process, device, op, flags and attribution: requests,
//! bytes, errors, queue and device time.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{BooleanBuilder, Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use tracer_common::blockio::{
    self as common, Attribution, BLOCK_INFLIGHT, BLOCK_STATS, BlockDrop, BlockInflight,
    BlockIoConfig, BlockKey, BlockStats, FLAG_FUA, FLAG_META, FLAG_PREFLUSH, FLAG_SYNC,
};

use super::{
    Build, Interval, KernelDrops, Registration, Table, Tracer, TracerError,
    columns::{HistogramColumn, IntervalProcessColumns, batch, histogram, interval_process_fields},
    views::{Measure, Metric, TableSpec},
};
use crate::{
    devices::{DeviceNames, kernel_dev},
    kernel::{btf::BtfError, maps},
    loader::KernelSetup,
    probes::{Probe, always},
    processes::{OfProcess, ProcessKey, Processes},
    settings::Settings,
    snapshot::{Counters, Op, StatsMap},
};

crate::processes::of_process!(BlockKey);

pub const TABLE: &str = "blockio";

pub static REGISTRATION: Registration = Registration {
    name: "blockio",
    selectable: true,
    wanted: |s| s.asked_for("blockio"),
    probes: PROBES,
    tables: &[Table {
        name: TABLE,
        schema,
        summary: Some(TableSpec {
            table: TABLE,
            title: "Block I/O",
            keys: &["device", "op", "attribution"],
            counters: &[
                "requests",
                "bytes",
                "errors",
                "queue_ns_sum",
                "device_ns_sum",
            ],
            histogram: Some("device_histogram"),
            default_sort: "bytes",
            rank: 2,
        }),
    }],
    metrics: &[Metric {
        id: "blockio.write_bytes",
        table: TABLE,
        title: "Bytes written to block devices",
        keys: &["device"],
        only: &[("op", &["write"])],
        measure: Measure::Counter("bytes"),
        threshold: 0.10,
        floor: 1048576.0,
        new_is_regression: false,
        rank: 8,
    }],
    drops: Some(KernelDrops::of::<BlockDrop>),
    setup,
    hooks: super::no_hooks,
    build,
};

fn fallback(s: &Settings) -> bool {
    s.block_fallback
}

/// Submission, issue, completion, the rare requeue/merge/error, and the writeback hand-over.
/// block_rq_insert and block_rq_complete stand in for block_io_start/done only when some device
/// does not account I/O (they would cost two program runs per request).
const PROBES: &[Probe] = &[
    Probe {
        program: "block_io_start",
        tracepoint: "block_io_start",
        wanted: always,
    },
    Probe {
        program: "block_rq_insert",
        tracepoint: "block_rq_insert",
        wanted: fallback,
    },
    Probe {
        program: "block_rq_issue",
        tracepoint: "block_rq_issue",
        wanted: always,
    },
    Probe {
        program: "block_rq_requeue",
        tracepoint: "block_rq_requeue",
        wanted: always,
    },
    Probe {
        program: "block_rq_merge",
        tracepoint: "block_rq_merge",
        wanted: always,
    },
    Probe {
        program: "block_rq_error",
        tracepoint: "block_rq_error",
        wanted: always,
    },
    Probe {
        program: "block_rq_complete",
        tracepoint: "block_rq_complete",
        wanted: fallback,
    },
    Probe {
        program: "block_io_done",
        tracepoint: "block_io_done",
        wanted: always,
    },
    Probe {
        program: "writeback_dirty_folio",
        tracepoint: "writeback_dirty_folio",
        wanted: always,
    },
    Probe {
        program: "writeback_single_inode_start",
        tracepoint: "writeback_single_inode_start",
        wanted: always,
    },
    Probe {
        program: "writeback_single_inode",
        tracepoint: "writeback_single_inode",
        wanted: always,
    },
];

fn setup(k: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    let b = k.btf;
    let off = |s: &str, f: &str| b.field_offset(s, f);
    let bit = |name: &str| b.enum_value("req_flag_bits", name);
    let config = BlockIoConfig {
        fallback: u32::from(k.settings.block_fallback),
        task_flags_offset: off("task_struct", "flags")?,
        rq_part_offset: off("request", "part")?,
        rq_data_len_offset: off("request", "__data_len")?,
        rq_cmd_flags_offset: off("request", "cmd_flags")?,
        bdev_dev_offset: off("block_device", "bd_dev")?,
        rq_q_offset: off("request", "q")?,
        queue_disk_offset: off("request_queue", "disk")?,
        disk_part0_offset: off("gendisk", "part0")?,
        mapping_host_offset: off("address_space", "host")?,
        req_sync_bit: bit("__REQ_SYNC")?,
        req_fua_bit: bit("__REQ_FUA")?,
        req_preflush_bit: bit("__REQ_PREFLUSH")?,
        req_meta_bit: bit("__REQ_META")?,
        task_btf: u32::from(b.has_helper_current_task_btf()),
        _pad: 0,
    };
    k.global(common::CONFIG, &config);
    Ok(())
}

fn build(ebpf: &mut Ebpf, _: &Build<'_>) -> super::Built {
    Ok(Some(Box::new(BlockIoTracer::new(ebpf)?)))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = interval_process_fields();
    fields.extend([
        Field::new("device", DataType::Utf8, false),
        Field::new("device_major_minor", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
        Field::new("sync", DataType::Boolean, false),
        Field::new("fua", DataType::Boolean, false),
        Field::new("preflush", DataType::Boolean, false),
        Field::new("meta", DataType::Boolean, false),
        Field::new("attribution", DataType::Utf8, false),
        Field::new("requests", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("queue_ns_sum", DataType::Int64, false),
        Field::new("device_ns_sum", DataType::Int64, false),
        Field::new("queue_histogram", histogram(), false),
        Field::new("device_histogram", histogram(), false),
    ]);
    Arc::new(Schema::new(fields))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The name of a `REQ_OP_*` (include/linux/blk_types.h).
pub fn op_name(op: u8) -> String {
    match op {
        0 => "read".into(),
        1 => "write".into(),
        2 => "flush".into(),
        3 => "discard".into(),
        5 => "secure_erase".into(),
        9 => "write_zeroes".into(),
        other => format!("op_{other}"),
    }
}

impl Counters for BlockStats {
    fn zero() -> Self {
        BlockStats::ZERO
    }

    fn combine(&self, o: &Self, op: Op) -> Self {
        BlockStats {
            requests: op.u64(self.requests, o.requests),
            bytes: op.u64(self.bytes, o.bytes),
            errors: op.u64(self.errors, o.errors),
            queue_ns: op.u64(self.queue_ns, o.queue_ns),
            device_ns: op.u64(self.device_ns, o.device_ns),
            queue_hist: op.hist(self.queue_hist, &o.queue_hist),
            device_hist: op.hist(self.device_hist, &o.device_hist),
        }
    }

    fn is_zero(&self) -> bool {
        self.requests == 0
    }
}

pub struct BlockIoTracer {
    stats: StatsMap<BlockKey, BlockStats>,
    totals: Vec<(BlockKey, BlockStats)>,
    inflight: Array<MapData, BlockInflight>,
    devices: DeviceNames,
}

impl BlockIoTracer {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, TracerError> {
        Ok(BlockIoTracer {
            stats: StatsMap::take(ebpf, BLOCK_STATS)?,
            totals: Vec::new(),
            inflight: maps::take_as(ebpf, BLOCK_INFLIGHT)?,
            devices: DeviceNames::default(),
        })
    }
}

impl Tracer for BlockIoTracer {
    fn snapshot(&mut self, _processes: &Processes) -> Result<(), TracerError> {
        self.totals = self.stats.totals()?;
        Ok(())
    }

    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let mut totals = std::mem::take(&mut self.totals);
        totals.sort_by_key(|(k, _)| *k);
        let mut process = IntervalProcessColumns::default();
        let mut device = StringBuilder::new();
        let mut major_minor = StringBuilder::new();
        let mut op = StringBuilder::new();
        let (mut sync, mut fua, mut preflush, mut meta) = (
            BooleanBuilder::new(),
            BooleanBuilder::new(),
            BooleanBuilder::new(),
            BooleanBuilder::new(),
        );
        let mut attribution = StringBuilder::new();
        let (mut requests, mut bytes, mut errors, mut queue_ns, mut device_ns) = (
            Int64Builder::new(),
            Int64Builder::new(),
            Int64Builder::new(),
            Int64Builder::new(),
            Int64Builder::new(),
        );
        let (mut queue_hist, mut device_hist) =
            (HistogramColumn::default(), HistogramColumn::default());
        let mut rows = 0;
        for (key, total) in totals {
            let Some(d) = self.stats.delta(key, total) else {
                continue;
            };
            let p = key.process();
            process.append(interval, p, processes.get(p));
            device.append_value(self.devices.name(key.dev));
            let (maj, min) = kernel_dev(key.dev);
            major_minor.append_value(format!("{maj}:{min}"));
            op.append_value(op_name(key.op));
            sync.append_value(key.flags & FLAG_SYNC != 0);
            fua.append_value(key.flags & FLAG_FUA != 0);
            preflush.append_value(key.flags & FLAG_PREFLUSH != 0);
            meta.append_value(key.flags & FLAG_META != 0);
            attribution.append_value(match Attribution::try_from(key.attribution) {
                Ok(Attribution::Writeback) => "writeback",
                _ => "direct",
            });
            requests.append_value(d.requests as i64);
            bytes.append_value(d.bytes as i64);
            errors.append_value(d.errors as i64);
            queue_ns.append_value(d.queue_ns as i64);
            device_ns.append_value(d.device_ns as i64);
            queue_hist.append(&d.queue_hist);
            device_hist.append(&d.device_hist);
            rows += 1;
        }
        // Writeback of an ended process's pages can complete after it was reaped: its rows are
        // written above; drop its entries again so the map stays bounded.
        self.stats.remove(|k| !processes.is_live_key(k.process()))?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut columns = process.finish();
        columns.extend::<[ArrayRef; 15]>([
            Arc::new(device.finish()),
            Arc::new(major_minor.finish()),
            Arc::new(op.finish()),
            Arc::new(sync.finish()),
            Arc::new(fua.finish()),
            Arc::new(preflush.finish()),
            Arc::new(meta.finish()),
            Arc::new(attribution.finish()),
            Arc::new(requests.finish()),
            Arc::new(bytes.finish()),
            Arc::new(errors.finish()),
            Arc::new(queue_ns.finish()),
            Arc::new(device_ns.finish()),
            queue_hist.finish(),
            device_hist.finish(),
        ]);
        batch(TABLE, schema(), columns).map(|b| vec![(TABLE, b)])
    }

    fn reap(&mut self, _ended: &[ProcessKey]) -> Result<(), TracerError> {
        // Nothing left to do: `batches` already dropped the entries of every process that is
        // not live, the ones that just ended included (writeback of an ended process's pages can
        // complete later; those rows carry no process name, the identity stays in
        // process_pid/process_start_time).
        Ok(())
    }

    fn run_drops(&self) -> Vec<super::DropCount> {
        let unfinished = self
            .inflight
            .iter()
            .filter(|e| e.as_ref().is_ok_and(|v| v.active != 0))
            .count() as u64;
        if unfinished > 0 {
            vec![("blockio", "inflight_at_end", unfinished)]
        } else {
            Vec::new()
        }
    }
}
