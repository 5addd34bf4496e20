//! The syscall dispatch: `raw_syscalls:sys_enter` and `sys_exit` as BTF tracepoints, attached
//! once whatever the tracers, calling each tracer's hook for the syscall numbers it asked for.
//!
//! sys_exit answers "is this process traced?" first (the only question an untraced process pays
//! for), counts the call (the syscall tracer always runs), then looks up the syscall's class in
//! `SYSCALL_CLASSES` (`tracer_common::dispatch`): one inlined array load says which hooks want
//! the number and whether the descriptor in its first argument must be resolved — done once
//! here, for every hook that needs it.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map},
    maps::Array,
    programs::BtfTracePointContext,
};
use tracer_common::{
    dispatch::{
        DispatchConfig, ENTER_HOOKS, HOOK_CLOSE, HOOK_FILEIO, HOOK_FILES, HOOK_PYSTACK,
        HOOK_SOCKETS, HOOKS_MASK, KIND_FILE, KIND_MASK, KIND_RESOLVE, KIND_SHIFT, KIND_SOCKET,
        NOT_BYTES, OP_MASK, RESOLVE_FD, SYSCALL_NRS,
    },
    fileio::FileKind,
    syscalls::{SyscallKey, is_error},
};

use crate::{
    fileio,
    kernel::{
        btf_field, config_global, current_task, current_task_btf, current_task_field, read_at,
        read_ptr, setting,
    },
    python, sockets,
    syscalls::{self, Timing},
    targets::traced_generation,
};

config_global!(DISPATCH_CONFIG: DispatchConfig);

/// Per syscall number its class (`tracer_common::dispatch`), filled by the loader.
#[map]
static SYSCALL_CLASSES: Array<u32> = Array::with_max_entries(SYSCALL_NRS, 0);

/// Marks "number not known yet"; no architecture has this many syscalls.
const NO_NR: u32 = u32::MAX - 2;

/// A syscall of a traced process that some hook wants, as sys_exit saw it.
pub struct Call {
    pub tgid: u32,
    pub generation: u32,
    pub tid: u32,
    /// The thread's syscall count after this one (0 when not counted).
    pub thread_syscalls: u64,
    pub regs: *const u8,
    pub ret: i64,
    /// Its class.
    pub class: u32,
    /// Its I/O family (`FileOp`, 0 for none).
    pub op: u8,
    /// Bytes it moved (positive return values of byte-counting calls).
    pub bytes: u64,
    /// The descriptor in its first argument, its kind, and when resolved its file and inode.
    pub fd: u32,
    pub kind: FileKind,
    pub file: Option<*const u8>,
    pub inode: Option<*const u8>,
    pub timing: Timing,
}

/// `sys_enter(struct pt_regs *regs, long id)`. Attached only when some hook wants entries
/// (syscall latency, the capture's close).
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(generation) = traced_generation(tgid) else {
        return 0;
    };
    let nr = ctx.arg::<i64>(1) as u32;
    if syscalls::measures_latency() {
        syscalls::on_enter(pid_tgid as u32, nr);
    }
    let class = match SYSCALL_CLASSES.get(nr) {
        Some(class) => *class,
        None => 0,
    };
    if class & ENTER_HOOKS & HOOK_CLOSE != 0 {
        let regs: *const u8 = ctx.arg(0);
        let fd: u32 = btf_field(regs, setting!(DISPATCH_CONFIG.regs_arg0_offset));
        sockets::on_close(tgid, generation, pid_tgid as u32, fd);
    }
    if class & HOOK_PYSTACK != 0 {
        let regs: *const u8 = ctx.arg(0);
        let fd: u32 = btf_field(regs, setting!(DISPATCH_CONFIG.regs_arg0_offset));
        python::on_send(tgid, generation, pid_tgid as u32, fd);
    }
    0
}

/// `sys_exit(struct pt_regs *regs, long ret)`.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(generation) = traced_generation(tgid) else {
        return 0;
    };
    let ret: i64 = ctx.arg(1);
    let regs: *const u8 = ctx.arg(0);
    // Plain integers rather than an Option: the verifier cannot see that the branches setting and
    // reading an Option agree, and rejects the path where they seem not to.
    let mut nr = NO_NR;
    let mut timing = Timing {
        timed: false,
        ns: 0,
        shift: 0,
    };
    if let Some((stamped, t)) = syscalls::take_stamp(pid_tgid as u32) {
        nr = stamped;
        timing = t;
    }
    if nr == NO_NR {
        nr = syscall_nr(regs);
        if ret == 0 && is_fork_family(nr) {
            // The child's return from fork/clone: it did not make the call (its parent did).
            return 0;
        }
        if nr == u32::MAX {
            // orig_ax is -1 at exit only after rt_sigreturn restored a signal frame.
            nr = setting!(DISPATCH_CONFIG.rt_sigreturn_nr);
        }
    }
    syscalls::record(
        &SyscallKey {
            tgid,
            generation,
            nr,
        },
        is_error(ret),
        &timing,
    );
    let class = match SYSCALL_CLASSES.get(nr) {
        Some(class) => *class,
        None => 0,
    };
    let thread_syscalls = sockets::count_syscall(pid_tgid as u32);
    if class & HOOKS_MASK & !ENTER_HOOKS != 0 {
        let call = Call {
            tgid,
            generation,
            tid: pid_tgid as u32,
            thread_syscalls,
            regs,
            ret,
            class,
            op: (class & OP_MASK) as u8,
            bytes: 0,
            fd: 0,
            kind: FileKind::Other,
            file: None,
            inode: None,
            timing,
        };
        hooks(call);
    }
    0
}

/// Resolves what the hooks of the call's class need and calls them.
#[inline(always)]
fn hooks(mut call: Call) {
    let class = call.class;
    call.bytes = if class & NOT_BYTES == 0 && call.ret > 0 {
        call.ret as u64
    } else {
        0
    };
    call.fd = btf_field(call.regs, setting!(DISPATCH_CONFIG.regs_arg0_offset));
    let implied = (class & KIND_MASK) >> KIND_SHIFT;
    call.kind = if class & RESOLVE_FD != 0 {
        let resolved = resolve(call.fd);
        call.file = resolved.map(|(f, _)| f);
        call.inode = resolved.map(|(_, i)| i);
        match call
            .inode
            .and_then(|i| read_at::<u16>(i, setting!(DISPATCH_CONFIG.inode_mode_offset)))
        {
            Some(mode) => FileKind::from_mode(mode),
            None if implied == KIND_FILE => FileKind::File,
            None if implied == KIND_SOCKET => FileKind::Socket,
            None => FileKind::Other,
        }
    } else if implied == KIND_SOCKET {
        FileKind::Socket
    } else if implied == KIND_RESOLVE {
        FileKind::Other
    } else {
        FileKind::File
    };
    if class & HOOK_FILEIO != 0 {
        fileio::on_exit(&call);
    }
    if class & HOOK_FILES != 0 {
        fileio::on_exit_files(&call);
    }
    if class & HOOK_SOCKETS != 0 {
        sockets::on_exit(&call);
    }
}

/// The `struct file` and inode of descriptor `fd` of the current task.
#[inline(always)]
pub fn resolve(fd: u32) -> Option<(*const u8, *const u8)> {
    let file = fd_file(fd)?;
    let inode = read_ptr(file, setting!(DISPATCH_CONFIG.file_inode_offset))?;
    Some((file, inode))
}

/// fork, vfork, clone, clone3 (absent ones are NO_SYSCALL).
#[inline(always)]
fn is_fork_family(nr: u32) -> bool {
    nr == setting!(DISPATCH_CONFIG.clone_nr)
        || nr == setting!(DISPATCH_CONFIG.clone3_nr)
        || nr == setting!(DISPATCH_CONFIG.fork_nr)
        || nr == setting!(DISPATCH_CONFIG.vfork_nr)
}

/// The syscall number saved in `regs` (`orig_ax` on x86_64, `syscallno` on arm64; the loader
/// finds the offset in the kernel's BTF).
#[inline(always)]
fn syscall_nr(regs: *const u8) -> u32 {
    btf_field(regs, setting!(DISPATCH_CONFIG.regs_syscall_nr_offset))
}

/// Argument `i` (1 or 2; 0 is the descriptor) of the syscall as it stands at exit.
#[inline(always)]
pub fn arg(call: &Call, i: u32) -> u64 {
    let offset = if i == 1 {
        setting!(DISPATCH_CONFIG.regs_arg1_offset)
    } else {
        setting!(DISPATCH_CONFIG.regs_arg2_offset)
    };
    btf_field(call.regs, offset)
}

/// The current thread's `fsbase` (x86_64: glibc's `pthread_self()`); 0 where the kernel has
/// no such field.
#[inline(always)]
pub fn current_fsbase() -> u64 {
    let offset = setting!(DISPATCH_CONFIG.task_fsbase_offset);
    if offset == tracer_common::dispatch::NO_FIELD {
        return 0;
    }
    current_task_field(offset, setting!(DISPATCH_CONFIG.task_btf) != 0)
}

/// Offset of `inode.i_ino`.
#[inline(always)]
pub fn inode_ino_offset() -> u32 {
    setting!(DISPATCH_CONFIG.inode_ino_offset)
}

/// The `struct file` of descriptor `fd` of the current task. With a BTF task pointer the walk to
/// the descriptor array is plain loads and only indexing the array needs a probe read; without
/// one (Linux < 5.11) every step is a probe read.
#[inline(always)]
fn fd_file(fd: u32) -> Option<*const u8> {
    let (files_off, fdt_off, max_off, array_off) = (
        setting!(DISPATCH_CONFIG.task_files_offset),
        setting!(DISPATCH_CONFIG.files_fdt_offset),
        setting!(DISPATCH_CONFIG.fdt_max_fds_offset),
        setting!(DISPATCH_CONFIG.fdt_fd_offset),
    );
    let array = if setting!(DISPATCH_CONFIG.task_btf) != 0 {
        let task = current_task_btf();
        let files: *const u8 = btf_field(task, files_off);
        if files.is_null() {
            return None;
        }
        let fdt: *const u8 = btf_field(files, fdt_off);
        if fdt.is_null() {
            return None;
        }
        let max: u32 = btf_field(fdt, max_off);
        if fd >= max {
            return None;
        }
        let array: *const u8 = btf_field(fdt, array_off);
        array
    } else {
        let files = read_ptr(current_task(), files_off)?;
        let fdt = read_ptr(files, fdt_off)?;
        if fd >= read_at::<u32>(fdt, max_off)? {
            return None;
        }
        read_ptr(fdt, array_off)?
    };
    read_ptr(array, fd.wrapping_mul(8))
}
