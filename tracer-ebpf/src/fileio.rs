//! The file I/O tracer's hooks (called by [`crate::dispatch`] at sys_exit): read/write-family
//! syscalls and fsync & co. by kind of descriptor (file, socket, pipe, other), and with
//! `--files` the bytes per file.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use tracer_common::{
    drops::Reasons as _,
    fileio::{
        FILE_NAME_BYTES, FILE_STATS_ENTRIES, FILEIO_STATS_ENTRIES, FileIoConfig, FileIoDrop,
        FileIoKey, FileIoStats, FileKey, FileKind, FileOp, FileStats, FilesDrop,
    },
    hist,
    syscalls::is_error,
};

use crate::{
    dispatch::Call,
    kernel::{config_global, count_drop, read_at, read_ptr, setting},
};

config_global!(FILEIO_CONFIG: FileIoConfig);

#[map]
static FILEIO_STATS: PerCpuHashMap<FileIoKey, FileIoStats> =
    PerCpuHashMap::with_max_entries(FILEIO_STATS_ENTRIES, 0);

#[map]
static FILE_STATS: PerCpuHashMap<FileKey, FileStats> =
    PerCpuHashMap::with_max_entries(FILE_STATS_ENTRIES, 0);

#[map]
static FILEIO_DROPS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(FileIoDrop::ALL.len() as u32, 0);

#[map]
static FILES_DROPS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(FilesDrop::ALL.len() as u32, 0);

/// Counts the call into the (process, kind, family) stats.
#[inline(always)]
pub fn on_exit(call: &Call) {
    let key = FileIoKey {
        tgid: call.tgid,
        generation: call.generation,
        kind: call.kind as u8,
        op: call.op,
        _pad: [0; 2],
    };
    let stats = match FILEIO_STATS.get_ptr_mut(key) {
        Some(s) => s,
        None => {
            if let Some(zero) = crate::zero::zeroed::<FileIoStats>() {
                let _ = FILEIO_STATS.insert(key, zero, u64::from(BPF_NOEXIST));
            }
            match FILEIO_STATS.get_ptr_mut(key) {
                Some(s) => s,
                None => {
                    count_drop(&FILEIO_DROPS, FileIoDrop::StatsFull.index());
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's copy; programs do not nest on a CPU for these tracepoints.
    unsafe {
        (*stats).calls += 1;
        if is_error(call.ret) {
            (*stats).errors += 1;
        }
        (*stats).bytes += call.bytes;
        if call.timing.timed {
            let shift = call.timing.shift & 31;
            (*stats).timed_calls += 1;
            (*stats).duration_ns += call.timing.ns << shift;
            if let Some(c) = (*stats).hist.get_mut(hist::bucket(call.timing.ns)) {
                *c = c.wrapping_add(1 << shift);
            }
        }
    }
}

/// `--files`: bytes per (process, file), for calls on regular files.
#[inline(always)]
pub fn on_exit_files(call: &Call) {
    if call.kind != FileKind::File {
        return;
    }
    let (Some(file), Some(inode)) = (call.file, call.inode) else {
        return;
    };
    let (Some(ino), Some(sb)) = (
        read_at::<u64>(inode, crate::dispatch::inode_ino_offset()),
        read_ptr(inode, setting!(FILEIO_CONFIG.inode_sb_offset)),
    ) else {
        return;
    };
    let key = FileKey {
        tgid: call.tgid,
        generation: call.generation,
        ino,
        dev: read_at::<u32>(sb, setting!(FILEIO_CONFIG.sb_dev_offset)).unwrap_or(0),
        _pad: 0,
    };
    let stats = match FILE_STATS.get_ptr_mut(key) {
        Some(s) => s,
        None => {
            let mut fresh = FileStats {
                read_bytes: 0,
                write_bytes: 0,
                reads: 0,
                writes: 0,
                fd: call.fd,
                _pad: 0,
                name: [0; FILE_NAME_BYTES],
            };
            if let Some(dentry) = read_ptr(file, setting!(FILEIO_CONFIG.file_dentry_offset))
                && let Some(name) = read_ptr(dentry, setting!(FILEIO_CONFIG.dentry_name_offset))
            {
                // SAFETY: a fault-safe string copy into a stack buffer of the given length.
                let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut fresh.name) };
            }
            let _ = FILE_STATS.insert(key, fresh, u64::from(BPF_NOEXIST));
            match FILE_STATS.get_ptr_mut(key) {
                Some(s) => s,
                None => {
                    count_drop(&FILES_DROPS, FilesDrop::StatsFull.index());
                    return;
                }
            }
        }
    };
    let reading = call.op == FileOp::Read as u8 || call.op == FileOp::Recv as u8;
    // SAFETY: this CPU's copy.
    unsafe {
        (*stats).fd = call.fd;
        if reading {
            (*stats).reads += 1;
            (*stats).read_bytes += call.bytes;
        } else {
            (*stats).writes += 1;
            (*stats).write_bytes += call.bytes;
        }
    }
}
