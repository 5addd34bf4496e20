//! The file I/O tracer: read/write-family syscalls by kind of descriptor (file, socket, pipe,
//! other), fsync & co. It runs inside sys_exit (no extra attach point): one array load tells
//! whether the call is file I/O; only then is the descriptor resolved.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::map,
    maps::{Array, PerCpuHashMap},
};
use tracer_common::{
    drops::DropReason,
    fileio::{
        FILE_NAME_BYTES, FileIoKey, FileIoStats, FileKey, FileKind, FileOp, FileStats, class,
    },
    hist,
    maps::{FILE_STATS_ENTRIES, FILEIO_STATS_ENTRIES},
    syscalls::{SAMPLE_SHIFT_NRS, is_error},
};

use crate::{
    config::setting,
    drops,
    kernel::{btf_field, current_task_btf, read_at, read_ptr},
};

/// Per syscall number its class (`tracer_common::fileio::class`), four per element.
#[map]
static FILEIO_OPS: Array<[u16; 4]> = Array::with_max_entries(SAMPLE_SHIFT_NRS / 4, 0);

#[map]
static FILEIO_STATS: PerCpuHashMap<FileIoKey, FileIoStats> =
    PerCpuHashMap::with_max_entries(FILEIO_STATS_ENTRIES, 0);

#[map]
static FILE_STATS: PerCpuHashMap<FileKey, FileStats> =
    PerCpuHashMap::with_max_entries(FILE_STATS_ENTRIES, 0);

/// Called from sys_exit for every call of a traced process.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "a hot path: everything sys_exit already has"
)]
pub fn on_exit(
    tgid: u32,
    generation: u32,
    nr: u32,
    regs: *const u8,
    ret: i64,
    timed: bool,
    ns: u64,
    shift: u32,
) {
    let fileio = setting!(fileio) != 0;
    let sql = setting!(sql) != 0;
    if !fileio && !sql {
        return;
    }
    let Some(ops) = FILEIO_OPS.get(nr / 4) else {
        return;
    };
    let code = ops[(nr % 4) as usize];
    if code == 0 {
        return;
    }
    let op = (code & class::OP_MASK) as u8;
    let bytes = if code & class::NOT_BYTES == 0 && ret > 0 {
        ret as u64
    } else {
        0
    };
    let fd: u32 = btf_field(regs, setting!(regs_arg0_offset));
    let implied = (code & class::KIND_MASK) >> class::KIND_SHIFT;
    let files = setting!(files) != 0;
    // The descriptor is resolved only when its kind is not implied, or when --files or the SQL
    // tracer needs the file itself.
    let resolve = implied == class::KIND_RESOLVE
        || (files && implied == class::KIND_FILE)
        || (sql && implied == class::KIND_SOCKET);
    let mut file = None;
    let mut inode = None;
    let kind = if resolve {
        file = fd_file(fd);
        inode = file.and_then(|f| read_ptr(f, setting!(file_inode_offset)));
        match inode.and_then(|i| read_at::<u16>(i, setting!(inode_mode_offset))) {
            Some(mode) => FileKind::from_mode(mode),
            None if implied == class::KIND_FILE => FileKind::File,
            None if implied == class::KIND_SOCKET => FileKind::Socket,
            None => FileKind::Other,
        }
    } else if implied == class::KIND_SOCKET {
        FileKind::Socket
    } else {
        FileKind::File
    };
    if fileio {
        record(
            &FileIoKey {
                tgid,
                generation,
                kind: kind as u8,
                op,
                _pad: [0; 2],
            },
            is_error(ret),
            bytes,
            timed,
            ns,
            shift,
        );
    }
    if files
        && kind == FileKind::File
        && let (Some(file), Some(inode)) = (file, inode)
    {
        record_file(tgid, generation, fd, file, inode, op, bytes);
    }
    if sql
        && kind == FileKind::Socket
        && let (Some(file), Some(inode)) = (file, inode)
    {
        let sending = op == FileOp::Write as u8 || op == FileOp::Send as u8;
        crate::sql::on_socket(tgid, generation, file, inode, code, sending, regs, ret);
    }
}

/// The `struct file` of descriptor `fd` of the current task. The walk to the descriptor array
/// goes through BTF-typed pointers (plain loads); only indexing the array needs a probe read.
#[inline(always)]
fn fd_file(fd: u32) -> Option<*const u8> {
    let task = current_task_btf();
    let files: *const u8 = btf_field(task, setting!(task_files_offset));
    if files.is_null() {
        return None;
    }
    let fdt: *const u8 = btf_field(files, setting!(files_fdt_offset));
    if fdt.is_null() {
        return None;
    }
    let max: u32 = btf_field(fdt, setting!(fdt_max_fds_offset));
    if fd >= max {
        return None;
    }
    let array: *const u8 = btf_field(fdt, setting!(fdt_fd_offset));
    read_ptr(array, fd.wrapping_mul(8))
}

#[inline(always)]
fn record(key: &FileIoKey, error: bool, bytes: u64, timed: bool, ns: u64, shift: u32) {
    let stats = match FILEIO_STATS.get_ptr_mut(key) {
        Some(s) => s,
        None => {
            if let Some(zero) = crate::zero::zeroed::<FileIoStats>() {
                let _ = FILEIO_STATS.insert(key, zero, u64::from(BPF_NOEXIST));
            }
            match FILEIO_STATS.get_ptr_mut(key) {
                Some(s) => s,
                None => {
                    drops::count(DropReason::FileIoStatsFull);
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's copy; programs do not nest on a CPU for these tracepoints.
    unsafe {
        (*stats).calls += 1;
        if error {
            (*stats).errors += 1;
        }
        (*stats).bytes += bytes;
        if timed {
            let shift = shift & 31;
            (*stats).timed_calls += 1;
            (*stats).duration_ns += ns << shift;
            if let Some(c) = (*stats).hist.get_mut(hist::bucket(ns)) {
                *c = c.wrapping_add(1 << shift);
            }
        }
    }
}

/// `--files`: bytes per (process, file).
#[inline(always)]
fn record_file(
    tgid: u32,
    generation: u32,
    fd: u32,
    file: *const u8,
    inode: *const u8,
    op: u8,
    bytes: u64,
) {
    let (Some(ino), Some(sb)) = (
        read_at::<u64>(inode, setting!(inode_ino_offset)),
        read_ptr(inode, setting!(inode_sb_offset)),
    ) else {
        return;
    };
    let key = FileKey {
        tgid,
        generation,
        ino,
        dev: read_at::<u32>(sb, setting!(sb_dev_offset)).unwrap_or(0),
        _pad: 0,
    };
    let stats = match FILE_STATS.get_ptr_mut(&key) {
        Some(s) => s,
        None => {
            let mut fresh = FileStats {
                read_bytes: 0,
                write_bytes: 0,
                reads: 0,
                writes: 0,
                fd,
                _pad: 0,
                name: [0; FILE_NAME_BYTES],
            };
            if let Some(dentry) = read_ptr(file, setting!(file_dentry_offset))
                && let Some(name) = read_ptr(dentry, setting!(dentry_name_offset))
            {
                // SAFETY: a fault-safe string copy into a stack buffer of the given length.
                let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut fresh.name) };
            }
            let _ = FILE_STATS.insert(&key, &fresh, u64::from(BPF_NOEXIST));
            match FILE_STATS.get_ptr_mut(&key) {
                Some(s) => s,
                None => {
                    drops::count(DropReason::FileStatsFull);
                    return;
                }
            }
        }
    };
    let reading = op == FileOp::Read as u8 || op == FileOp::Recv as u8;
    // SAFETY: this CPU's copy.
    unsafe {
        (*stats).fd = fd;
        if reading {
            (*stats).reads += 1;
            (*stats).read_bytes += bytes;
        } else {
            (*stats).writes += 1;
            (*stats).write_bytes += bytes;
        }
    }
}
