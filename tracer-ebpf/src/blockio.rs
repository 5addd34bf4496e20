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
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use tracer_common::{
    blockio::{
        Attribution, BLOCK_INFLIGHT_ENTRIES, BLOCK_INFLIGHT_WAYS, BLOCK_STATS_ENTRIES, BlockDrop,
        BlockInflight, BlockIoConfig, BlockKey, BlockStats, DISK_VIA_QUEUE, DISK_VIA_REQUEST,
        FLAG_FUA, FLAG_META, FLAG_PREFLUSH, FLAG_SYNC, FLUSHER_OWNER_ENTRIES, Flusher, Owner,
        WRITEBACK_OWNER_ENTRIES, is_block_device,
    },
    drops::Reasons as _,
    hist,
};

use crate::{
    kernel::{
        SharedCounter, address_of, btf_field, config_global, count_drop, current_is_kthread,
        read_at, read_ptr, setting,
    },
    targets::traced_generation,
};

config_global!(BLOCKIO_CONFIG: BlockIoConfig);

#[map]
static BLOCKIO_DROPS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(BlockDrop::ALL.len() as u32, 0);

#[inline(always)]
fn dropped(reason: BlockDrop) {
    count_drop(&BLOCKIO_DROPS, reason.index());
}

#[map]
static BLOCK_INFLIGHT: Array<BlockInflight> = Array::with_max_entries(BLOCK_INFLIGHT_ENTRIES, 0);

#[map]
static BLOCK_STATS: PerCpuHashMap<BlockKey, BlockStats> =
    PerCpuHashMap::with_max_entries(BLOCK_STATS_ENTRIES, 0);

#[map]
static WRITEBACK_OWNER: LruHashMap<u64, Owner> =
    LruHashMap::with_max_entries(WRITEBACK_OWNER_ENTRIES, 0);

#[map]
static FLUSHER_OWNER: HashMap<u32, Flusher> = HashMap::with_max_entries(FLUSHER_OWNER_ENTRIES, 0);

/// Traced requests in flight, all CPUs together (atomic add). While it is 0 the issue and
/// completion programs skip their map lookup: on a host where the traced service is idle, other
/// processes' I/O costs one load per event.
#[unsafe(no_mangle)]
static TRACED_IN_FLIGHT: SharedCounter = SharedCounter::new();

/// Entries in `FLUSHER_OWNER` (atomic add at insert, sub at remove): while it is 0, a kernel
/// thread's request needs no lookup there.
#[unsafe(no_mangle)]
static FLUSHER_WINDOWS: SharedCounter = SharedCounter::new();

/// `REQ_OP_WRITE` in `cmd_flags & REQ_OP_MASK` (the same in every kernel).
const REQ_OP_WRITE: u32 = 1;

/// The process request `rq`, submitted by the current task, is charged to, if any, how, and
/// whether it writes a block device's buffer cache (a flusher writing filesystem metadata).
#[inline(always)]
fn owner_of(rq: *const u8) -> Option<(Owner, Attribution, bool)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // Kernel threads too: one given with --pid is traced as itself.
    if let Some(generation) = traced_generation(tgid) {
        return Some((Owner { tgid, generation }, Attribution::Direct, false));
    }
    // Only flusher threads (kernel threads) write back on someone else's behalf.
    if !current_is_kthread(
        setting!(BLOCKIO_CONFIG.task_flags_offset),
        setting!(BLOCKIO_CONFIG.task_btf) != 0,
    ) {
        return None;
    }
    // Where requests are taken at insert/issue (the fallback), a plug can flush a flusher's
    // writes after its inode window, or inside the next inode's: the first page's inode says
    // whose they are then — its traced dirtier, or nobody's when it has none (a block device's
    // buffer cache dirtied before the run: the superblock, bitmaps, inode tables, which the
    // file's window would otherwise take as the file's data). The window only stands in when
    // the page names no inode.
    if setting!(BLOCKIO_CONFIG.owner_from_page) != 0 {
        let cmd_flags: u32 = btf_field(rq, setting!(BLOCKIO_CONFIG.rq_cmd_flags_offset));
        if cmd_flags & 0xff == REQ_OP_WRITE
            && let Some(inode) = inode_of_first_page(rq)
        {
            // SAFETY: a plain copy out of the map value.
            let owner = unsafe { WRITEBACK_OWNER.get(inode as u64) }.copied()?;
            let mode: u16 = read_at(inode, setting!(BLOCKIO_CONFIG.inode_mode_offset))?;
            return Some((owner, Attribution::Writeback, is_block_device(mode)));
        }
    }
    // Most of the time no thread is inside a traced inode's writeback: no hash lookup then.
    if FLUSHER_WINDOWS.get() == 0 {
        return None;
    }
    // SAFETY: a plain copy out of the map value.
    let f = unsafe { FLUSHER_OWNER.get(pid_tgid as u32) }?;
    Some((f.owner, Attribution::Writeback, f.buffer_cache != 0))
}

/// The inode of the request's first page, when that is a page of the page cache (its mapping is
/// the inode's; anonymous and other tagged mappings name none).
#[inline(always)]
fn inode_of_first_page(rq: *const u8) -> Option<*const u8> {
    let bio = read_ptr(rq, setting!(BLOCKIO_CONFIG.rq_bio_offset))?;
    let vec = read_ptr(bio, setting!(BLOCKIO_CONFIG.bio_io_vec_offset))?;
    let mut page = read_ptr(vec, setting!(BLOCKIO_CONFIG.bvec_page_offset))?;
    // A tail page of a large folio points to its head (bit 0 set); the head has the mapping.
    let head: u64 = read_at(page, setting!(BLOCKIO_CONFIG.page_compound_head_offset))?;
    if head & 1 != 0 {
        page = (head - 1) as *const u8;
    }
    let mapping: u64 = read_at(page, setting!(BLOCKIO_CONFIG.page_mapping_offset))?;
    if mapping == 0 || mapping & 3 != 0 {
        return None;
    }
    read_ptr(
        mapping as *const u8,
        setting!(BLOCKIO_CONFIG.mapping_host_offset),
    )
}

/// Fills in device, op, flags and bytes from the request as it is now.
#[inline(always)]
fn describe(rq: *const u8, e: *mut BlockInflight) {
    let cmd_flags: u32 = btf_field(rq, setting!(BLOCKIO_CONFIG.rq_cmd_flags_offset));
    let bit = |b: u32, flag: u8| {
        if cmd_flags & (1u32 << (b & 31)) != 0 {
            flag
        } else {
            0
        }
    };
    let flags = bit(setting!(BLOCKIO_CONFIG.req_sync_bit), FLAG_SYNC)
        | bit(setting!(BLOCKIO_CONFIG.req_fua_bit), FLAG_FUA)
        | bit(setting!(BLOCKIO_CONFIG.req_preflush_bit), FLAG_PREFLUSH)
        | bit(setting!(BLOCKIO_CONFIG.req_meta_bit), FLAG_META);
    // Pointer fields of a BTF pointer load as BTF pointers: plain loads all the way. A flush has
    // no partition: it counts against the whole disk. Which way leads there, and what
    // `request.part` points to, are read-only settings: the verifier walks only the branch this
    // kernel's types were chosen for.
    let part: *const u8 = btf_field(rq, setting!(BLOCKIO_CONFIG.rq_part_offset));
    let part_dev = setting!(BLOCKIO_CONFIG.part_dev_offset);
    let dev: u32 = if !part.is_null() {
        btf_field(part, part_dev)
    } else {
        let path = setting!(BLOCKIO_CONFIG.disk_path);
        let disk: *const u8 = if path == DISK_VIA_QUEUE {
            let q: *const u8 = btf_field(rq, setting!(BLOCKIO_CONFIG.rq_q_offset));
            if q.is_null() {
                core::ptr::null()
            } else {
                btf_field(q, setting!(BLOCKIO_CONFIG.queue_disk_offset))
            }
        } else if path == DISK_VIA_REQUEST {
            btf_field(rq, setting!(BLOCKIO_CONFIG.rq_disk_offset))
        } else {
            core::ptr::null()
        };
        let part0 = setting!(BLOCKIO_CONFIG.disk_part0_offset);
        if disk.is_null() {
            0
        } else if setting!(BLOCKIO_CONFIG.part0_embedded) != 0 {
            btf_field(disk, part0 + part_dev)
        } else {
            let whole: *const u8 = btf_field(disk, part0);
            if whole.is_null() {
                0
            } else {
                btf_field(whole, part_dev)
            }
        }
    };
    // SAFETY: `e` is a valid map value; a request is handled by one CPU at a time.
    unsafe {
        let buffer_cache = if (*e).buffer_cache != 0 { FLAG_META } else { 0 };
        (*e).dev = dev;
        (*e).op = (cmd_flags & 0xff) as u8;
        (*e).flags = flags | buffer_cache;
        (*e).bytes = btf_field(rq, setting!(BLOCKIO_CONFIG.rq_data_len_offset));
        (*e).described = 1;
    }
}

/// The first entry of the set of `BLOCK_INFLIGHT` a request address maps to. Requests are
/// cache-line-aligned slab objects: the low 6 bits say nothing.
#[inline(always)]
fn set_of(rq: u64) -> u32 {
    let h = (rq >> 6) ^ (rq >> 18) ^ (rq >> 30);
    // The mask follows the map's size (user space checks it is sets × ways, sets a power of
    // two), so every way of every set is inside the array.
    ((h as u32) & setting!(BLOCKIO_CONFIG.inflight_set_mask)) * BLOCK_INFLIGHT_WAYS
}

/// Older than this, an in-flight entry is stale.
#[inline(always)]
fn is_stale(now: u64, queued_ns: u64) -> bool {
    now.saturating_sub(queued_ns) > setting!(BLOCKIO_CONFIG.stale_ns)
}

/// The entry of request `rq`, active or not.
#[inline(always)]
fn find(rq: u64) -> Option<*mut BlockInflight> {
    let set = set_of(rq);
    for way in 0..BLOCK_INFLIGHT_WAYS {
        let e = BLOCK_INFLIGHT.get_ptr_mut(set + way)?;
        // SAFETY: valid map value.
        if unsafe { (*e).rq } == rq {
            return Some(e);
        }
    }
    None
}

/// A request is submitted: track it if the submitter's I/O is traced.
#[inline(always)]
fn start(rq: *const u8) {
    // Untraced submitters pay only this check.
    let Some((owner, attribution, buffer_cache)) = owner_of(rq) else {
        return;
    };
    let key = address_of(rq);
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // The first way of its set that is the request's own entry, idle or stale. The scan stops
    // there (each way it reads is a cold cache line, the first one mostly answers: a device's
    // requests come back at the same addresses): the first way holding an address is its entry
    // ([`find`] stops at the same way), and a stale one further on is reclaimed, counted, when
    // another request takes it.
    let set = set_of(key);
    let mut slot: *mut BlockInflight = core::ptr::null_mut();
    for way in 0..BLOCK_INFLIGHT_WAYS {
        let Some(e) = BLOCK_INFLIGHT.get_ptr_mut(set + way) else {
            // Not with the mask user space derives from the map's size; counted all the same.
            dropped(BlockDrop::InflightFull);
            return;
        };
        // SAFETY: valid map value.
        unsafe {
            if (*e).rq == key || (*e).active == 0 || is_stale(now, (*e).queued_ns) {
                slot = e;
                break;
            }
        }
    }
    if slot.is_null() {
        dropped(BlockDrop::InflightFull);
        return;
    }
    // SAFETY: valid map value, handled by one CPU at a time.
    unsafe {
        let e = slot;
        let was_active = (*e).active != 0;
        if was_active && (*e).rq == key {
            if (*e).tgid == owner.tgid && (*e).generation == owner.generation {
                // Already tracked (block_rq_insert after block_io_start).
                return;
            }
        } else if was_active {
            // A traced request that vanished without completing: its entry is reclaimed.
            dropped(BlockDrop::StaleEntry);
        }
        (*e).rq = key;
        (*e).tgid = owner.tgid;
        (*e).generation = owner.generation;
        (*e).queued_ns = now;
        (*e).issued_ns = 0;
        (*e).attribution = attribution as u8;
        (*e).buffer_cache = u8::from(buffer_cache);
        (*e).error = 0;
        (*e).described = 0;
        (*e).active = 1;
        if !was_active {
            TRACED_IN_FLIGHT.add(1);
        }
    }
}

/// The tracked, active entry of a request.
#[inline(always)]
fn active(rq: *const u8) -> Option<*mut BlockInflight> {
    if TRACED_IN_FLIGHT.get() == 0 {
        return None;
    }
    let e = find(address_of(rq))?;
    // SAFETY: valid map value.
    (unsafe { (*e).active } != 0).then_some(e)
}

/// `block_io_start(struct request *rq)`, in the submitter's context.
#[btf_tracepoint(function = "block_io_start")]
pub fn block_io_start(ctx: BtfTracePointContext) -> i32 {
    start(ctx.arg(0));
    0
}

/// `block_rq_insert(struct request *rq)` (fallback): for devices without I/O accounting.
#[btf_tracepoint(function = "block_rq_insert")]
pub fn block_rq_insert(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    if active(rq).is_none() {
        start(rq);
    }
    0
}

/// `block_rq_issue(struct request *rq)`: the request goes to the device (maybe from a kblockd
/// worker, so the owner was taken earlier).
#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let entry = match active(rq) {
        Some(e) => e,
        None if setting!(BLOCKIO_CONFIG.fallback) != 0 => {
            start(rq);
            match active(rq) {
                Some(e) => e,
                None => return 0,
            }
        }
        None => return 0,
    };
    describe(rq, entry);
    // SAFETY: valid map value, handled by one CPU at a time.
    unsafe { (*entry).issued_ns = bpf_ktime_get_ns() };
    0
}

/// `block_rq_requeue(struct request *rq)`: it will be issued again.
#[btf_tracepoint(function = "block_rq_requeue")]
pub fn block_rq_requeue(ctx: BtfTracePointContext) -> i32 {
    if let Some(entry) = active(ctx.arg(0)) {
        // SAFETY: valid map memory.
        unsafe { (*entry).issued_ns = 0 };
    }
    0
}

/// `block_rq_merge(struct request *rq)`: `rq` was merged into another request and is freed
/// without completing; its bytes complete with the other one.
#[btf_tracepoint(function = "block_rq_merge")]
pub fn block_rq_merge(ctx: BtfTracePointContext) -> i32 {
    if let Some(entry) = active(ctx.arg(0)) {
        // SAFETY: valid map memory.
        unsafe { (*entry).active = 0 };
        TRACED_IN_FLIGHT.sub(1);
    }
    0
}

/// `block_rq_error(struct request *rq, blk_status_t error, unsigned int nr_bytes)`.
#[btf_tracepoint(function = "block_rq_error")]
pub fn block_rq_error(ctx: BtfTracePointContext) -> i32 {
    if let Some(entry) = active(ctx.arg(0)) {
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
    let left: u32 = btf_field(rq, setting!(BLOCKIO_CONFIG.rq_data_len_offset));
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

/// Charges a completed request to its owner and marks its entry idle.
#[inline(always)]
fn finish(rq: *const u8, error: bool) {
    let Some(entry) = active(rq) else {
        return;
    };
    // SAFETY: valid map value.
    if unsafe { (*entry).described } == 0 {
        // Completed without being issued itself (a flush done by the flush machinery).
        describe(rq, entry);
    }
    // SAFETY: valid map value; copied, then marked idle.
    let e = unsafe {
        (*entry).active = 0;
        *entry
    };
    TRACED_IN_FLIGHT.sub(1);
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if is_stale(now, e.queued_ns) {
        // A traced request that vanished without completing left this entry, and an untraced
        // request now uses the same address: not ours.
        dropped(BlockDrop::StaleEntry);
        return;
    }
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
    let stats = match BLOCK_STATS.get_ptr_mut(stats_key) {
        Some(s) => s,
        None => {
            if let Some(zero) = crate::zero::zeroed::<BlockStats>() {
                let _ = BLOCK_STATS.insert(stats_key, zero, u64::from(BPF_NOEXIST));
            }
            match BLOCK_STATS.get_ptr_mut(stats_key) {
                Some(s) => s,
                None => {
                    dropped(BlockDrop::StatsFull);
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

/// An inode this CPU saw dirtied, by whom, and `OWNER_EPOCH` then: while no owner changed
/// anywhere since, the next folio of that inode by that process needs no map lookup.
#[derive(Clone, Copy)]
#[repr(C)]
struct LastDirtier {
    inode: u64,
    owner: Owner,
    epoch: u32,
    _pad: u32,
}

/// Inodes per CPU in `LAST_DIRTIER` (a power of two): a process appending to a log while
/// another rewrites a data file must not evict each other's entry at every folio.
const LAST_DIRTIER_WAYS: usize = 4;

#[map]
static LAST_DIRTIER: PerCpuArray<[LastDirtier; LAST_DIRTIER_WAYS]> =
    PerCpuArray::with_max_entries(1, 0);

/// Bumped after every `WRITEBACK_OWNER` insert (an owner changed, or an entry was evicted to make
/// room): every CPU's `LAST_DIRTIER` is stale from then on.
#[unsafe(no_mangle)]
static OWNER_EPOCH: SharedCounter = SharedCounter::new();

/// `writeback_dirty_folio(struct folio *folio, struct address_space *mapping)`, in the
/// dirtier's context: remember which traced process dirtied the inode. A process dirties an
/// inode folio after folio and the owner rarely changes: this CPU's last (inode, owner) answers
/// most calls without touching the LRU map (whose lookup also marks the entry referenced).
#[btf_tracepoint(function = "writeback_dirty_folio")]
pub fn writeback_dirty_folio(ctx: BtfTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(generation) = traced_generation(tgid) else {
        return 0;
    };
    let mapping: *const u8 = ctx.arg(1);
    let Some(inode) = read_ptr(mapping, setting!(BLOCKIO_CONFIG.mapping_host_offset)) else {
        return 0;
    };
    let key = inode as u64;
    let owner = Owner { tgid, generation };
    // Read before the map: an insert on another CPU after this read makes the cache stale.
    let epoch = OWNER_EPOCH.get();
    let Some(ways) = LAST_DIRTIER.get_ptr_mut(0) else {
        return 0;
    };
    // Inodes are slab objects of about a KiB: the address bits above that tell them apart.
    let way = ((key >> 10) ^ (key >> 14)) as usize & (LAST_DIRTIER_WAYS - 1);
    // SAFETY: `way` < LAST_DIRTIER_WAYS, inside this CPU's element.
    let last = unsafe { (ways as *mut LastDirtier).add(way) };
    // SAFETY: this CPU's element; a program on this CPU runs to its end before the next.
    unsafe {
        if (*last).inode == key && (*last).owner == owner && (*last).epoch == epoch {
            return 0;
        }
    }
    // SAFETY: a plain copy out of the map value.
    if unsafe { WRITEBACK_OWNER.get(key) }.copied() != Some(owner) {
        if WRITEBACK_OWNER.insert(key, owner, 0).is_err() {
            dropped(BlockDrop::WritebackOwnerFull);
            return 0;
        }
        // The cache below keeps the epoch read before: this insert makes it stale once, and the
        // next page's lookup refreshes it.
        OWNER_EPOCH.add(1);
    }
    // SAFETY: as above.
    unsafe {
        *last = LastDirtier {
            inode: key,
            owner,
            epoch,
            _pad: 0,
        };
    }
    0
}

/// `writeback_single_inode_start(struct inode *inode, struct writeback_control *wbc, …)`: a
/// flusher thread starts writing an inode; its requests until the matching end are the
/// dirtier's (and metadata when the inode is a block device's: its buffer cache).
#[btf_tracepoint(function = "writeback_single_inode_start")]
pub fn writeback_single_inode_start(ctx: BtfTracePointContext) -> i32 {
    let inode: *const u8 = ctx.arg(0);
    // SAFETY: a copy out of the map value.
    if let Some(owner) = unsafe { WRITEBACK_OWNER.get(inode as u64) }.copied() {
        let tid = bpf_get_current_pid_tgid() as u32;
        let mode: u16 = btf_field(inode, setting!(BLOCKIO_CONFIG.inode_mode_offset));
        let flusher = Flusher {
            owner,
            buffer_cache: u32::from(is_block_device(mode)),
        };
        if FLUSHER_OWNER
            .insert(tid, flusher, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            FLUSHER_WINDOWS.add(1);
        } else if FLUSHER_OWNER
            .insert(tid, flusher, u64::from(BPF_EXIST))
            .is_err()
        {
            // Not in the map (a window without its end, left by a task that went on), and no
            // room for a new one.
            dropped(BlockDrop::FlusherOwnerFull);
        }
    }
    0
}

/// `writeback_single_inode(struct inode *inode, …)`: the flusher is done with the inode.
#[btf_tracepoint(function = "writeback_single_inode")]
pub fn writeback_single_inode(_ctx: BtfTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if FLUSHER_OWNER.remove(tid).is_ok() {
        FLUSHER_WINDOWS.sub(1);
    }
    0
}
