//! The block I/O tracer's map types.

use crate::hist::BUCKETS;

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
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<BlockInflight>() == 48);

/// Value of `WRITEBACK_OWNER` (keyed by `struct inode` address) and `FLUSHER_INODE` (keyed by
/// the flusher thread's tid): the traced process that last dirtied the inode's pages.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub generation: u32,
}

const _: () = assert!(core::mem::size_of::<Owner>() == 8);
