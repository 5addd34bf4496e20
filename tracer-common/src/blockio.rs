//! The block I/O tracer's maps, types, drops and configuration.

use crate::hist::BUCKETS;

/// `Array<BlockInflight>`: traced requests in flight, in sets chosen by request address.
pub const BLOCK_INFLIGHT: &str = "BLOCK_INFLIGHT";
/// `PerCpuHashMap<BlockKey, BlockStats>`.
pub const BLOCK_STATS: &str = "BLOCK_STATS";
/// `LruHashMap<u64, Owner>`: the traced process that last dirtied an inode's pages.
pub const WRITEBACK_OWNER: &str = "WRITEBACK_OWNER";
/// `HashMap<u32, Owner>`: flusher thread → owner of the inode it is writing back.
pub const FLUSHER_OWNER: &str = "FLUSHER_OWNER";
/// The read-only global holding [`BlockIoConfig`].
pub const CONFIG: &str = "BLOCKIO_CONFIG";

/// Traced block requests in flight at once: an array of sets of `BLOCK_INFLIGHT_WAYS` entries,
/// the set chosen by the request's address (array lookups are inlined by the verifier; a hash
/// lookup costs ~50 ns three times per request). A request whose set is full of requests still
/// in flight is dropped and counted. 16K entries: far above any queue depth × hardware queues.
/// The sets in use follow the map's size ([`BlockIoConfig::inflight_set_mask`]).
pub const BLOCK_INFLIGHT_ENTRIES: u32 = 16 * 1024;
/// Entries per set of `BLOCK_INFLIGHT`.
pub const BLOCK_INFLIGHT_WAYS: u32 = 4;
/// (process, device, op, flags, attribution) keys.
pub const BLOCK_STATS_ENTRIES: u32 = 4 * 1024;
/// Inodes whose dirtier is remembered (least recently dirtied forgotten first).
pub const WRITEBACK_OWNER_ENTRIES: u32 = 64 * 1024;
/// Flusher threads writing back at once.
pub const FLUSHER_OWNER_ENTRIES: u32 = 1024;

/// Offsets into `struct request` & co. and the request flag bits of the running kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIoConfig {
    /// Some device does not account I/O (iostats=0): take submissions at block_rq_insert and
    /// block_rq_issue too, and completions at block_rq_complete.
    pub fallback: u32,
    /// task_struct.flags (PF_KTHREAD tells kernel threads, such as flushers, apart).
    pub task_flags_offset: u32,
    pub rq_part_offset: u32,
    pub rq_data_len_offset: u32,
    pub rq_cmd_flags_offset: u32,
    /// Offset of the `dev_t` in what `request.part` points to: `block_device.bd_dev`, or
    /// `hd_struct.__dev.devt` before 5.11.
    pub part_dev_offset: u32,
    /// How a request without a partition (a flush) finds its disk ([`DISK_VIA_QUEUE`], …), and
    /// the offsets on the way: request.q → request_queue.disk, or request.rq_disk.
    pub disk_path: u32,
    pub rq_q_offset: u32,
    pub queue_disk_offset: u32,
    pub rq_disk_offset: u32,
    /// gendisk.part0: a pointer to the whole disk's partition, or (before 5.11) the partition
    /// itself, embedded (`part0_embedded` 1).
    pub disk_part0_offset: u32,
    pub part0_embedded: u32,
    pub mapping_host_offset: u32,
    /// Bit numbers of REQ_SYNC, REQ_FUA, REQ_PREFLUSH and REQ_META in `cmd_flags` (enum
    /// req_flag_bits).
    pub req_sync_bit: u32,
    pub req_fua_bit: u32,
    pub req_preflush_bit: u32,
    pub req_meta_bit: u32,
    /// 1 when `bpf_get_current_task_btf` exists (Linux ≥ 5.11): task fields are plain loads.
    pub task_btf: u32,
    /// 1: a write a flusher thread submits is charged to the traced dirtier of its first page's
    /// inode, or to nobody when that inode has none (the thread's inode window only when the
    /// page names no inode): request.bio →
    /// bio.bi_io_vec → bio_vec.bv_page (→ page.compound_head) → page.mapping →
    /// address_space.host. Used with the fallback, whose submission points (insert, issue) can
    /// come after the window, or inside the next inode's window (a plug flushed late).
    pub owner_from_page: u32,
    pub rq_bio_offset: u32,
    pub bio_io_vec_offset: u32,
    pub bvec_page_offset: u32,
    pub page_compound_head_offset: u32,
    pub page_mapping_offset: u32,
    /// `inode.i_mode`: a flusher writing a block device's inode writes the buffer cache
    /// (filesystem metadata), see [`BlockInflight::buffer_cache`].
    pub inode_mode_offset: u32,
    /// `BLOCK_INFLIGHT` has `inflight_set_mask + 1` sets of [`BLOCK_INFLIGHT_WAYS`] entries.
    pub inflight_set_mask: u32,
    /// An in-flight entry older than this is stale (ns).
    pub stale_ns: u64,
}

/// [`BlockIoConfig::disk_path`]: no way to the disk (flushes count under device 0:0).
pub const DISK_NONE: u32 = 0;
/// request.q → request_queue.disk (Linux ≥ 5.15).
pub const DISK_VIA_QUEUE: u32 = 1;
/// request.rq_disk (before 5.19).
pub const DISK_VIA_REQUEST: u32 = 2;

const _: () = assert!(core::mem::size_of::<BlockIoConfig>() == 112);

/// [`BlockIoConfig::stale_ns`] unless a test sets it: no request takes two minutes (the SCSI and
/// NVMe default timeouts are 30 s).
pub const STALE_NS: u64 = 120_000_000_000;

crate::drop_reasons! {
    /// What the block I/O tracer can lose.
    pub enum BlockDrop for ("blockio", "BLOCKIO_DROPS") {
        /// A traced block request could not be tracked (`BLOCK_INFLIGHT` full): it is lost.
        InflightFull = 0 => "inflight_map_full",
        /// A (process, device, op) key did not fit in `BLOCK_STATS`: that request is lost.
        StatsFull = 1 => "stats_map_full",
        /// An inode's dirtier could not be remembered: its writeback is not attributed.
        /// `WRITEBACK_OWNER` is an LRU map, which evicts rather than fails when full: this counts
        /// only an update the kernel could not make (bucket lock busy, no node to take). An
        /// evicted inode's later writeback is not attributed and not counted.
        WritebackOwnerFull = 2 => "writeback_owner_map_full",
        /// An in-flight entry older than [`BlockIoConfig::stale_ns`] (two minutes): a traced
        /// request that vanished left it, reclaimed by another request or found at completion;
        /// the completion is not charged.
        StaleEntry = 3 => "stale_inflight_entry",
        /// A flusher thread's owner could not be remembered (`FLUSHER_OWNER` full): the requests
        /// it issues for that inode are not attributed to the process that dirtied it.
        FlusherOwnerFull = 4 => "flusher_owner_map_full",
    }
}

crate::pod!(
    BlockIoConfig,
    BlockKey,
    BlockStats,
    BlockInflight,
    Owner,
    Flusher
);

/// Who a block request is charged to.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// The traced process submitted it (read, O_DIRECT write, fsync in its own context…).
    Direct = 0,
    /// A flusher thread wrote back pages the traced process had dirtied.
    Writeback = 1,
}

impl TryFrom<u8> for Attribution {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Attribution::Direct),
            1 => Ok(Attribution::Writeback),
            other => Err(other),
        }
    }
}

/// Key of `BLOCK_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub tgid: u32,
    pub generation: u32,
    /// `dev_t` of the partition or disk, kernel encoding (major << 20 | minor).
    pub dev: u32,
    /// `cmd_flags & REQ_OP_MASK` (read 0, write 1, flush 2, discard 3, …).
    pub op: u8,
    /// `cmd_flags` bits kept (see `Config::req_flags_mask`), shifted down: bit 0 sync, 1 FUA,
    /// 2 preflush, 3 meta.
    pub flags: u8,
    /// An [`Attribution`].
    pub attribution: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<BlockKey>() == 16);

/// Flag bits of [`BlockKey::flags`].
pub const FLAG_SYNC: u8 = 1;
pub const FLAG_FUA: u8 = 2;
pub const FLAG_PREFLUSH: u8 = 4;
pub const FLAG_META: u8 = 8;

/// Value of `BLOCK_STATS`, one per CPU; only grows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockStats {
    /// Requests completed.
    pub requests: u64,
    /// Bytes of the completed requests.
    pub bytes: u64,
    /// Requests that completed with an error.
    pub errors: u64,
    /// Sum of queue times (insert → issue), ns.
    pub queue_ns: u64,
    /// Sum of device times (issue → completion), ns.
    pub device_ns: u64,
    pub queue_hist: [u32; BUCKETS],
    pub device_hist: [u32; BUCKETS],
}

const _: () = assert!(core::mem::size_of::<BlockStats>() == 40 + 8 * BUCKETS);

impl BlockStats {
    pub const ZERO: BlockStats = BlockStats {
        requests: 0,
        bytes: 0,
        errors: 0,
        queue_ns: 0,
        device_ns: 0,
        queue_hist: [0; BUCKETS],
        device_hist: [0; BUCKETS],
    };
}

/// Element of `BLOCK_INFLIGHT` (a set-associative table on the `struct request` address): a
/// traced request between submission and completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInflight {
    /// The `struct request` address this entry is for (0: never used).
    pub rq: u64,
    pub tgid: u32,
    pub generation: u32,
    /// When it entered the queue (ns, CLOCK_MONOTONIC).
    pub queued_ns: u64,
    /// When it was issued to the device; 0 until then (and again after a requeue).
    pub issued_ns: u64,
    /// Bytes at issue.
    pub bytes: u32,
    pub dev: u32,
    pub op: u8,
    pub flags: u8,
    pub attribution: u8,
    /// Set when block_rq_error reported an error for it.
    pub error: u8,
    /// 1 while the request is a traced one in flight. Entries are reused by the next traced
    /// request that maps to their set (a device's request pool is fixed, so mostly the same
    /// address).
    pub active: u8,
    /// 1 once device, op, flags and bytes are filled in (at issue).
    pub described: u8,
    /// 1 when a flusher thread submitted it while writing back a block device's own inode: the
    /// buffer cache where filesystems keep inode tables, bitmaps and directories. Counted as
    /// [`FLAG_META`] whether or not the kernel set REQ_META (ext4 without a journal on 5.10
    /// does not for inode table blocks).
    pub buffer_cache: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<BlockInflight>() == 48);

/// Value of `WRITEBACK_OWNER` (keyed by `struct inode` address): the traced process that last
/// dirtied the inode's pages.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub generation: u32,
}

const _: () = assert!(core::mem::size_of::<Owner>() == 8);

/// Value of `FLUSHER_OWNER`: whose pages a flusher thread is writing back, and whether the inode
/// it writes is a block device's (its buffer cache: filesystem metadata).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flusher {
    pub owner: Owner,
    pub buffer_cache: u32,
}

const _: () = assert!(core::mem::size_of::<Flusher>() == 12);

/// Whether an `inode.i_mode` is a block device's (`S_ISBLK`).
#[inline(always)]
pub const fn is_block_device(mode: u16) -> bool {
    mode & 0o170000 == 0o060000
}
