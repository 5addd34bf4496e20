//! The block I/O tracer. A request is charged to whoever submitted it, captured at submission
//! (block_io_start, in the submitter's context; block_rq_insert and block_rq_issue stand in when
//! a device does not account I/O). Pages a traced process dirtied and a flusher thread writes back
//! are charged to that process as writeback: writeback_dirty_folio remembers the inode's dirtier,
//! writeback_single_inode_start tells which inode a flusher thread is writing.
//!
//! A request ends at block_io_done or at the block_rq_complete that completes all its bytes,
//! whichever comes first: batched completions (virtio-blk) skip block_rq_complete, devices
//! without I/O accounting skip block_io_done.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{HashMap, LruHashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use tracer_common::{
    blockio::{
        Attribution, BlockInflight, BlockKey, BlockStats, FLAG_FUA, FLAG_META, FLAG_PREFLUSH,
        FLAG_SYNC, Owner,
    },
    drops::DropReason,
    hist,
    maps::{
        BLOCK_INFLIGHT_ENTRIES, BLOCK_STATS_ENTRIES, FLUSHER_OWNER_ENTRIES, WRITEBACK_OWNER_ENTRIES,
    },
};

use crate::{
    config::setting,
    drops,
    kernel::{btf_field, read_at, read_ptr},
    targets::traced_generation,
};

#[map]
static BLOCK_INFLIGHT: HashMap<u64, BlockInflight> =
    HashMap::with_max_entries(BLOCK_INFLIGHT_ENTRIES, 0);

#[map]
static BLOCK_STATS: PerCpuHashMap<BlockKey, BlockStats> =
    PerCpuHashMap::with_max_entries(BLOCK_STATS_ENTRIES, 0);

#[map]
static WRITEBACK_OWNER: LruHashMap<u64, Owner> =
    LruHashMap::with_max_entries(WRITEBACK_OWNER_ENTRIES, 0);

#[map]
static FLUSHER_OWNER: HashMap<u32, Owner> = HashMap::with_max_entries(FLUSHER_OWNER_ENTRIES, 0);

/// The process the current task's block I/O is charged to, if any.
#[inline(always)]
fn owner_of_current() -> Option<(Owner, Attribution)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if let Some(generation) = traced_generation(tgid) {
        return Some((Owner { tgid, generation }, Attribution::Direct));
    }
    // SAFETY: a plain copy out of the map value.
    let owner = unsafe { FLUSHER_OWNER.get(&(pid_tgid as u32)) }?;
    Some((*owner, Attribution::Writeback))
}

/// What a request is: (device, op, flags, bytes), read from it as it is now (merges may still
/// grow it until issue).
#[inline(always)]
fn describe(rq: *const u8) -> (u32, u8, u8, u32) {
    let cmd_flags: u32 = btf_field(rq, setting!(rq_cmd_flags_offset));
    let bit = |b: u32, flag: u8| {
        if cmd_flags & (1u32 << (b & 31)) != 0 {
            flag
        } else {
            0
        }
    };
    let flags = bit(setting!(req_sync_bit), FLAG_SYNC)
        | bit(setting!(req_fua_bit), FLAG_FUA)
        | bit(setting!(req_preflush_bit), FLAG_PREFLUSH)
        | bit(setting!(req_meta_bit), FLAG_META);
    // A flush has no partition: charge it to the whole disk.
    let part = read_ptr(rq, setting!(rq_part_offset)).or_else(|| {
        read_ptr(rq, setting!(rq_q_offset))
            .and_then(|q| read_ptr(q, setting!(queue_disk_offset)))
            .and_then(|disk| read_ptr(disk, setting!(disk_part0_offset)))
    });
    let dev = part
        .and_then(|part| read_at::<u32>(part, setting!(bdev_dev_offset)))
        .unwrap_or(0);
    let bytes: u32 = btf_field(rq, setting!(rq_data_len_offset));
    (dev, (cmd_flags & 0xff) as u8, flags, bytes)
}

/// Starts tracking `rq` if the current task's I/O is traced.
#[inline(always)]
fn start(rq: *const u8) {
    let Some((owner, attribution)) = owner_of_current() else {
        return;
    };
    let (dev, op, flags, bytes) = describe(rq);
    let entry = BlockInflight {
        tgid: owner.tgid,
        generation: owner.generation,
        // Our own clock, not rq->start_time_ns: the block layer may take that from a plug's
        // cached time, which can be seconds old.
        // SAFETY: no preconditions.
        queued_ns: unsafe { bpf_ktime_get_ns() },
        issued_ns: 0,
        bytes,
        dev,
        op,
        flags,
        attribution: attribution as u8,
        error: 0,
        _pad: 0,
    };
    match BLOCK_INFLIGHT.insert(&(rq as u64), &entry, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Already tracked (block_rq_insert after block_io_start).
        Err(e) if e == -17 => {}
        Err(_) => drops::count(DropReason::BlockInflightFull),
    }
}

/// `block_io_start(struct request *rq)`, in the submitter's context.
#[btf_tracepoint(function = "block_io_start")]
pub fn block_io_start(ctx: BtfTracePointContext) -> i32 {
    if setting!(blockio) != 0 {
        start(ctx.arg(0));
    }
    0
}

/// `block_rq_insert(struct request *rq)`: for requests block_io_start did not see.
#[btf_tracepoint(function = "block_rq_insert")]
pub fn block_rq_insert(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    // SAFETY: a lookup; the value is not used.
    if setting!(blockio) != 0 && unsafe { BLOCK_INFLIGHT.get(&(rq as u64)) }.is_none() {
        start(rq);
    }
    0
}

/// `block_rq_issue(struct request *rq)`: the request goes to the device (maybe from a kblockd
/// worker, so the owner was taken earlier).
#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue(ctx: BtfTracePointContext) -> i32 {
    if setting!(blockio) == 0 {
        return 0;
    }
    let rq: *const u8 = ctx.arg(0);
    let key = rq as u64;
    let entry = match BLOCK_INFLIGHT.get_ptr_mut(&key) {
        Some(e) => e,
        None => {
            start(rq);
            match BLOCK_INFLIGHT.get_ptr_mut(&key) {
                Some(e) => e,
                None => return 0,
            }
        }
    };
    let (dev, op, flags, bytes) = describe(rq);
    // SAFETY: the entry is valid map memory; only this request's programs touch it, and a request
    // is issued on one CPU at a time.
    unsafe {
        (*entry).issued_ns = bpf_ktime_get_ns();
        (*entry).bytes = bytes;
        (*entry).dev = dev;
        (*entry).op = op;
        (*entry).flags = flags;
    }
    0
}

/// `block_rq_requeue(struct request *rq)`: it will be issued again.
#[btf_tracepoint(function = "block_rq_requeue")]
pub fn block_rq_requeue(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    if let Some(entry) = BLOCK_INFLIGHT.get_ptr_mut(&(rq as u64)) {
        // SAFETY: valid map memory.
        unsafe { (*entry).issued_ns = 0 };
    }
    0
}

/// `block_rq_merge(struct request *rq)`: `rq` was merged into another request and is freed
/// without completing; its bytes complete with the other one.
#[btf_tracepoint(function = "block_rq_merge")]
pub fn block_rq_merge(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let _ = BLOCK_INFLIGHT.remove(&(rq as u64));
    0
}

/// `block_rq_error(struct request *rq, blk_status_t error, unsigned int nr_bytes)`.
#[btf_tracepoint(function = "block_rq_error")]
pub fn block_rq_error(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    if let Some(entry) = BLOCK_INFLIGHT.get_ptr_mut(&(rq as u64)) {
        // SAFETY: valid map memory.
        unsafe { (*entry).error = 1 };
    }
    0
}

/// `block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes)`: fired
/// before the bytes are consumed, so the request is done when `nr_bytes` covers what is left.
#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let error: u64 = ctx.arg(1);
    let nr_bytes: u64 = ctx.arg(2);
    let left: u32 = btf_field(rq, setting!(rq_data_len_offset));
    if (nr_bytes & 0xffff_ffff) as u32 >= left {
        finish(rq, (error & 0xff) != 0);
    }
    0
}

/// `block_io_done(struct request *rq)`.
#[btf_tracepoint(function = "block_io_done")]
pub fn block_io_done(ctx: BtfTracePointContext) -> i32 {
    finish(ctx.arg(0), false);
    0
}

/// Charges a completed request to its owner and forgets it.
#[inline(always)]
fn finish(rq: *const u8, error: bool) {
    let key = rq as u64;
    // SAFETY: a copy out of the map value, taken before the entry is deleted.
    let Some(e) = (unsafe { BLOCK_INFLIGHT.get(&key) }).copied() else {
        return;
    };
    let _ = BLOCK_INFLIGHT.remove(&key);
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let issued = if e.issued_ns == 0 { now } else { e.issued_ns };
    let queue_ns = issued.saturating_sub(e.queued_ns);
    let device_ns = now.saturating_sub(issued);
    let stats_key = BlockKey {
        tgid: e.tgid,
        generation: e.generation,
        dev: e.dev,
        op: e.op,
        flags: e.flags,
        attribution: e.attribution,
        _pad: 0,
    };
    let stats = match BLOCK_STATS.get_ptr_mut(&stats_key) {
        Some(s) => s,
        None => {
            if let Some(zero) = crate::zero::zeroed::<BlockStats>() {
                let _ = BLOCK_STATS.insert(&stats_key, zero, u64::from(BPF_NOEXIST));
            }
            match BLOCK_STATS.get_ptr_mut(&stats_key) {
                Some(s) => s,
                None => {
                    drops::count(DropReason::BlockStatsFull);
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's copy.
    unsafe {
        (*stats).requests += 1;
        (*stats).bytes += u64::from(e.bytes);
        if error || e.error != 0 {
            (*stats).errors += 1;
        }
        (*stats).queue_ns += queue_ns;
        (*stats).device_ns += device_ns;
        if let Some(c) = (*stats).queue_hist.get_mut(hist::bucket(queue_ns)) {
            *c = c.wrapping_add(1);
        }
        if let Some(c) = (*stats).device_hist.get_mut(hist::bucket(device_ns)) {
            *c = c.wrapping_add(1);
        }
    }
}

/// `writeback_dirty_folio(struct folio *folio, struct address_space *mapping)`, in the
/// dirtier's context: remember which traced process dirtied the inode.
#[btf_tracepoint(function = "writeback_dirty_folio")]
pub fn writeback_dirty_folio(ctx: BtfTracePointContext) -> i32 {
    if setting!(blockio) == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(generation) = traced_generation(tgid) else {
        return 0;
    };
    let mapping: *const u8 = ctx.arg(1);
    if let Some(inode) = read_ptr(mapping, setting!(mapping_host_offset)) {
        let owner = Owner { tgid, generation };
        if WRITEBACK_OWNER.insert(&(inode as u64), &owner, 0).is_err() {
            drops::count(DropReason::WritebackOwnerFull);
        }
    }
    0
}

/// `writeback_single_inode_start(struct inode *inode, struct writeback_control *wbc, …)`: a
/// flusher thread starts writing an inode; its requests until the matching end are the
/// dirtier's.
#[btf_tracepoint(function = "writeback_single_inode_start")]
pub fn writeback_single_inode_start(ctx: BtfTracePointContext) -> i32 {
    if setting!(blockio) == 0 {
        return 0;
    }
    let inode: *const u8 = ctx.arg(0);
    // SAFETY: a copy out of the map value.
    if let Some(owner) = unsafe { WRITEBACK_OWNER.get(&(inode as u64)) }.copied() {
        let tid = bpf_get_current_pid_tgid() as u32;
        let _ = FLUSHER_OWNER.insert(&tid, &owner, 0);
    }
    0
}

/// `writeback_single_inode(struct inode *inode, …)`: the flusher is done with the inode.
#[btf_tracepoint(function = "writeback_single_inode")]
pub fn writeback_single_inode(_ctx: BtfTracePointContext) -> i32 {
    if setting!(blockio) != 0 {
        let tid = bpf_get_current_pid_tgid() as u32;
        let _ = FLUSHER_OWNER.remove(&tid);
    }
    0
}
