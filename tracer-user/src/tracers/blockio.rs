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
    self as common, Attribution, BLOCK_INFLIGHT, BLOCK_INFLIGHT_ENTRIES, BLOCK_INFLIGHT_WAYS,
    BLOCK_STATS, BlockDrop, BlockInflight, BlockIoConfig, BlockKey, BlockStats, DISK_NONE,
    DISK_VIA_QUEUE, DISK_VIA_REQUEST, FLAG_FUA, FLAG_META, FLAG_PREFLUSH, FLAG_SYNC, STALE_NS,
};

use super::{
    Build, Interval, KernelDrops, Registration, Table, Tracer, TracerError,
    columns::{HistogramColumn, IntervalProcessColumns, batch, histogram, interval_process_fields},
    views::{Measure, Metric, TableSpec},
};
use crate::{
    devices::{DeviceNames, kernel_dev},
    kernel::{
        btf::BtfError,
        maps,
        support::{Choice, Need, Otherwise, Way},
    },
    loader::KernelSetup,
    probes::{IfMissing, Probe},
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
        title: "Bytes written to block devices by the process itself",
        keys: &["device"],
        // Not what flushers wrote back for it: when that happens is the kernel's timing (dirty
        // expiry, memory pressure from anything else on the machine), not the code's; the
        // bytes the code wrote are `fileio.write_bytes`.
        only: &[("op", &["write"]), ("attribution", &["direct"])],
        except: &[],
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

/// What a kernel without the writeback tracepoints loses.
const WRITEBACK: IfMissing = IfMissing::Optional {
    feature: "writeback",
    lost: "writeback is not attributed (flusher threads' writes are not charged to the process \
           that dirtied the pages)",
    only_with: &[],
};

/// Submission, issue, completion, the rare requeue/merge/error, and the writeback hand-over.
/// block_rq_insert and block_rq_complete stand in for block_io_start/done when some device does
/// not account I/O (they would cost two program runs per request otherwise), and on kernels
/// before 6.5, which have no block_io_start/done. writeback_dirty_folio was writeback_dirty_page
/// before 5.19 (same arguments: the page or folio, its mapping).
const PROBES: &[Probe] = &[
    Probe::new("block_io_start", "block_io_start", &["request"]).if_missing(IfMissing::StoodIn),
    Probe::new("block_rq_insert", "block_rq_insert", &["request"])
        .when(fallback)
        .stands_in_for(&["block_io_start", "block_io_done"]),
    Probe::new("block_rq_issue", "block_rq_issue", &["request"]),
    Probe::new("block_rq_requeue", "block_rq_requeue", &["request"]),
    Probe::new("block_rq_merge", "block_rq_merge", &["request"]),
    // block_rq_complete carries the error too; only block_io_done's requests need this one.
    Probe::new("block_rq_error", "block_rq_error", &["request"]).if_missing(IfMissing::Optional {
        feature: "block_rq_error",
        lost: "errors of requests that end at block_io_done are not counted",
        only_with: &["block_io_done"],
    }),
    Probe::new(
        "block_rq_complete",
        "block_rq_complete",
        &["request", "", ""],
    )
    .when(fallback)
    .stands_in_for(&["block_io_start", "block_io_done"]),
    Probe::new("block_io_done", "block_io_done", &["request"]).if_missing(IfMissing::StoodIn),
    Probe::new(
        "writeback_dirty_folio",
        "writeback_dirty_folio",
        &["", "address_space"],
    )
    .or(&["writeback_dirty_page"])
    .if_missing(WRITEBACK),
    Probe::new(
        "writeback_single_inode_start",
        "writeback_single_inode_start",
        &["inode"],
    )
    .if_missing(WRITEBACK),
    Probe::new(
        "writeback_single_inode",
        "writeback_single_inode",
        &["inode"],
    )
    .if_missing(WRITEBACK),
];

/// The device number of a request's partition, decided by the type of `request.part` (a wrong
/// offset would be accepted by the verifier and count everything under device 0:0).
const DEVICE: Choice = Choice {
    what: "device of a request",
    ways: &[
        Way {
            value: 1,
            name: "request.part → block_device.bd_dev",
            needs: &[
                Need::FieldType("request", "part", "struct block_device *"),
                Need::Field("block_device", "bd_dev"),
            ],
        },
        Way {
            value: 2,
            name: "request.part → hd_struct.__dev.devt",
            needs: &[
                Need::FieldType("request", "part", "struct hd_struct *"),
                Need::FieldType("hd_struct", "__dev", "struct device"),
                Need::Field("device", "devt"),
            ],
        },
    ],
    otherwise: Otherwise::Unavailable,
};

/// The whole disk of a request without a partition (a flush), by the same types.
const FLUSH_DISK: Choice = Choice {
    what: "disk of a request without a partition (flush)",
    ways: &[
        Way {
            value: DISK_VIA_QUEUE,
            name: "request.q → request_queue.disk → gendisk.part0",
            needs: &[
                Need::FieldType("request", "part", "struct block_device *"),
                Need::FieldType("request_queue", "disk", "struct gendisk *"),
                Need::FieldType("gendisk", "part0", "struct block_device *"),
            ],
        },
        Way {
            value: DISK_VIA_REQUEST,
            name: "request.rq_disk → gendisk.part0",
            needs: &[
                Need::FieldType("request", "part", "struct block_device *"),
                Need::FieldType("request", "rq_disk", "struct gendisk *"),
                Need::FieldType("gendisk", "part0", "struct block_device *"),
            ],
        },
        Way {
            value: VIA_REQUEST_EMBEDDED,
            name: "request.rq_disk → gendisk.part0 (an hd_struct, embedded)",
            needs: &[
                Need::FieldType("request", "part", "struct hd_struct *"),
                Need::FieldType("request", "rq_disk", "struct gendisk *"),
                Need::FieldType("gendisk", "part0", "struct hd_struct"),
            ],
        },
    ],
    otherwise: Otherwise::Lost("flush requests without a partition count under device 0:0"),
};

/// [`FLUSH_DISK`]'s value for `DISK_VIA_REQUEST` with the partition embedded in the disk.
const VIA_REQUEST_EMBEDDED: u32 = 100;

/// With the fallback, a flusher may issue a request after its inode window closed, or inside the
/// next inode's (the plug is flushed later): the request's own first page says whose it is.
const OWNER_FROM_PAGE: Choice = Choice {
    what: "owner of writeback issued outside its inode's flusher window",
    ways: &[Way {
        value: 1,
        name: "request.bio → first page → mapping.host → last dirtier",
        needs: &[
            Need::FieldType("request", "bio", "struct bio *"),
            Need::FieldType("bio", "bi_io_vec", "struct bio_vec *"),
            Need::FieldType("bio_vec", "bv_page", "struct page *"),
            Need::Field("page", "compound_head"),
            Need::FieldType("page", "mapping", "struct address_space *"),
        ],
    }],
    otherwise: Otherwise::Lost(
        "writeback a flusher issues after writeback_single_inode is not attributed",
    ),
};

fn setup(k: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    let task_btf = k.choose(&super::dispatch::CURRENT_TASK)?.unwrap_or(0);
    let device = k.choose(&DEVICE)?;
    let flush = k.choose(&FLUSH_DISK)?.unwrap_or(DISK_NONE);
    let (disk_path, part0_embedded) = match flush {
        VIA_REQUEST_EMBEDDED => (DISK_VIA_REQUEST, true),
        other => (other, false),
    };
    let fallback = k.attaches("block_rq_insert");
    let writeback = k.attaches("writeback_single_inode_start");
    let owner_from_page = if fallback && writeback {
        k.choose(&OWNER_FROM_PAGE)?.unwrap_or(0)
    } else {
        0
    };
    let b = k.btf;
    let off = |s: &str, f: &str| b.field_offset(s, f);
    let or_zero = |s: &str, f: &str| b.field_offset(s, f).unwrap_or(0);
    let bit = |name: &str| b.enum_value("req_flag_bits", name);
    let part_dev_offset = if device == Some(2) {
        b.path_offset(&[("hd_struct", "__dev"), ("device", "devt")])?
    } else {
        off("block_device", "bd_dev")?
    };
    let page = owner_from_page != 0;
    let inflight = k.masked_entries(BLOCK_INFLIGHT, BLOCK_INFLIGHT_ENTRIES, BLOCK_INFLIGHT_WAYS);
    let stale_ns = k
        .settings
        .block_stale_ms
        .map_or(STALE_NS, |ms| u64::from(ms) * 1_000_000);
    let at = |s: &str, f: &str| if page { off(s, f) } else { Ok(0) };
    let config = BlockIoConfig {
        fallback: u32::from(fallback),
        task_flags_offset: off("task_struct", "flags")?,
        rq_part_offset: off("request", "part")?,
        rq_data_len_offset: off("request", "__data_len")?,
        rq_cmd_flags_offset: off("request", "cmd_flags")?,
        part_dev_offset,
        disk_path,
        rq_q_offset: off("request", "q")?,
        queue_disk_offset: or_zero("request_queue", "disk"),
        rq_disk_offset: or_zero("request", "rq_disk"),
        disk_part0_offset: or_zero("gendisk", "part0"),
        part0_embedded: u32::from(part0_embedded),
        mapping_host_offset: off("address_space", "host")?,
        req_sync_bit: bit("__REQ_SYNC")?,
        req_fua_bit: bit("__REQ_FUA")?,
        req_preflush_bit: bit("__REQ_PREFLUSH")?,
        req_meta_bit: bit("__REQ_META")?,
        task_btf,
        owner_from_page,
        rq_bio_offset: at("request", "bio")?,
        bio_io_vec_offset: at("bio", "bi_io_vec")?,
        bvec_page_offset: at("bio_vec", "bv_page")?,
        page_compound_head_offset: at("page", "compound_head")?,
        page_mapping_offset: at("page", "mapping")?,
        inode_mode_offset: off("inode", "i_mode")?,
        inflight_set_mask: inflight / BLOCK_INFLIGHT_WAYS - 1,
        stale_ns,
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

#[cfg(test)]
mod kernels {
    use super::*;
    use crate::kernel::support::fake;

    fn v5_10() -> fake::Kernel {
        fake::Kernel::default()
            .field("request", "part", "struct hd_struct *")
            .field("request", "rq_disk", "struct gendisk *")
            .field("hd_struct", "__dev", "struct device")
            .field("device", "devt", "dev_t")
            .field("gendisk", "part0", "struct hd_struct")
    }

    fn v6_1() -> fake::Kernel {
        fake::Kernel::default()
            .field("request", "part", "struct block_device *")
            .field("block_device", "bd_dev", "dev_t")
            .field("request_queue", "disk", "struct gendisk *")
            .field("gendisk", "part0", "struct block_device *")
    }

    fn value(c: &Choice, k: &fake::Kernel) -> Option<u32> {
        c.value(&c.decide(k, "x86_64"))
    }

    #[test]
    fn the_device_comes_from_the_type_of_request_part() {
        assert_eq!(value(&DEVICE, &v6_1()), Some(1));
        assert_eq!(value(&DEVICE, &v5_10()), Some(2));
        assert_eq!(value(&FLUSH_DISK, &v6_1()), Some(DISK_VIA_QUEUE));
        assert_eq!(value(&FLUSH_DISK, &v5_10()), Some(VIA_REQUEST_EMBEDDED));
        // 5.11–5.14: a block_device partition, rq_disk still there, no request_queue.disk yet.
        let between = fake::Kernel::default()
            .field("request", "part", "struct block_device *")
            .field("block_device", "bd_dev", "dev_t")
            .field("request", "rq_disk", "struct gendisk *")
            .field("gendisk", "part0", "struct block_device *");
        assert_eq!(value(&DEVICE, &between), Some(1));
        assert_eq!(value(&FLUSH_DISK, &between), Some(DISK_VIA_REQUEST));
        let neither = fake::Kernel::default()
            .field("request", "part", "struct block_device *")
            .field("block_device", "bd_dev", "dev_t");
        assert_eq!(
            value(&FLUSH_DISK, &neither),
            None,
            "flushes count under 0:0"
        );
    }

    #[test]
    fn an_unknown_partition_type_is_no_device_at_all() {
        let odd = fake::Kernel::default().field("request", "part", "struct gendisk *");
        assert_eq!(value(&DEVICE, &odd), None);
        assert!(matches!(DEVICE.otherwise, Otherwise::Unavailable));
    }
}
