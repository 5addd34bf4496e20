//! The syscall dispatch: sys_enter and sys_exit are attached once, and call each tracer's hook
//! for the syscall numbers that tracer asked for. Which hooks a number wants, and what the
//! dispatch knows about the syscall (its I/O family, the kind of descriptor it implies, the shape
//! of its buffer), is one `u32` per number in [`SYSCALL_CLASSES`], written by the loader from
//! every enabled tracer's answer before any process is traced.

/// `Array<u32>` indexed by syscall number: its class (bits below; 0: no hook wants it).
pub const SYSCALL_CLASSES: &str = "SYSCALL_CLASSES";
/// The read-only global holding [`DispatchConfig`].
pub const CONFIG: &str = "DISPATCH_CONFIG";

/// Syscall numbers covered by the class table (x86_64 and arm64 stay below 512).
pub const SYSCALL_NRS: u32 = 512;

/// Bits 0-3: the I/O family ([`crate::fileio::FileOp`]; 0: none).
pub const OP_MASK: u32 = 0x0000_000f;
/// Bits 4-5: the descriptor kind the syscall implies, so the descriptor need not be resolved
/// (pread64 and company only work on files, recvfrom and company only on sockets).
pub const KIND_SHIFT: u32 = 4;
pub const KIND_MASK: u32 = 0x0000_0030;
pub const KIND_RESOLVE: u32 = 0;
pub const KIND_FILE: u32 = 1;
pub const KIND_SOCKET: u32 = 2;
/// Bit 6: the return value counts messages, not bytes (recvmmsg, sendmmsg).
pub const NOT_BYTES: u32 = 0x0000_0040;
/// Bits 8-10: the shape of the syscall's user buffer ([`shape`]).
pub const SHAPE_SHIFT: u32 = 8;
pub const SHAPE_MASK: u32 = 0x0000_0700;
/// Bit 15: resolve the descriptor in the first argument (file, inode, kind) before calling
/// hooks; set when some enabled hook needs more than the implied kind.
pub const RESOLVE_FD: u32 = 0x0000_8000;

/// Bits 16-31: the hooks that want this syscall at its exit, one bit per hook.
pub const HOOKS_MASK: u32 = 0xffff_0000;
/// The file I/O tracer (`fileio` table).
pub const HOOK_FILEIO: u32 = 1 << 16;
/// Bytes per file (`files` table).
pub const HOOK_FILES: u32 = 1 << 17;
/// Socket traffic capture (SQL, HTTP, …).
pub const HOOK_SOCKETS: u32 = 1 << 18;
/// At sys_enter: a descriptor is about to be closed (the capture ends its connection).
pub const HOOK_CLOSE: u32 = 1 << 19;
/// At sys_enter: a send by a CPython process the SQL tracer knows (the Python stack of a SQL
/// client's send, for its statement's call site).
pub const HOOK_PYSTACK: u32 = 1 << 20;
/// Hooks that run at sys_enter (the others run at sys_exit).
pub const ENTER_HOOKS: u32 = HOOK_CLOSE | HOOK_PYSTACK;

/// Buffer shapes of send/receive syscalls.
pub mod shape {
    /// No user buffer (sendfile, splice, fsync…).
    pub const NONE: u32 = 0;
    /// `(fd, buf, len)`: read, write, pread64, pwrite64, recvfrom, sendto.
    pub const CONTIGUOUS: u32 = 1;
    /// `(fd, iov, iovcnt)`: readv, writev and friends.
    pub const IOVEC: u32 = 2;
    /// `(fd, msghdr, flags)`: recvmsg, sendmsg.
    pub const MSGHDR: u32 = 3;
    /// `(fd, mmsghdr, vlen)`: recvmmsg, sendmmsg (the first message).
    pub const MMSGHDR: u32 = 4;

    /// The shape of a syscall, by name.
    pub fn of_syscall(name: &str) -> u32 {
        match name {
            "read" | "write" | "pread64" | "pwrite64" | "recvfrom" | "sendto" => CONTIGUOUS,
            "readv" | "writev" | "preadv" | "pwritev" | "preadv2" | "pwritev2" => IOVEC,
            "recvmsg" | "sendmsg" => MSGHDR,
            "recvmmsg" | "sendmmsg" => MMSGHDR,
            _ => NONE,
        }
    }
}

/// What the dispatch needs: where the syscall number and arguments sit in `struct pt_regs`, the
/// numbers of the syscalls that need special care, and the offsets of the walk from the current
/// task to a descriptor's inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Offsets into `struct pt_regs`: the syscall number and the first three arguments as
    /// they stand at syscall exit (x86_64: orig_ax, di, si, dx; arm64: syscallno, orig_x0,
    /// regs[1], regs[2]).
    pub regs_syscall_nr_offset: u32,
    pub regs_arg0_offset: u32,
    pub regs_arg1_offset: u32,
    pub regs_arg2_offset: u32,
    /// `rt_sigreturn` returns with the number -1 in the registers; the fork family returns 0 a
    /// second time, in the child, which did not make the call (`NO_SYSCALL` where the
    /// architecture has none).
    pub rt_sigreturn_nr: u32,
    pub clone_nr: u32,
    pub clone3_nr: u32,
    pub fork_nr: u32,
    pub vfork_nr: u32,
    /// task_struct.files → files_struct.fdt → fdtable.{max_fds, fd} → file.f_inode →
    /// inode.{i_mode, i_ino}.
    pub task_files_offset: u32,
    pub files_fdt_offset: u32,
    pub fdt_max_fds_offset: u32,
    pub fdt_fd_offset: u32,
    pub file_inode_offset: u32,
    pub inode_mode_offset: u32,
    pub inode_ino_offset: u32,
    /// 1 when the current task can be had as a BTF pointer (`bpf_get_current_task_btf`, Linux ≥
    /// 5.11) and its fields loaded directly; 0: read them with `bpf_probe_read_kernel`.
    pub task_btf: u32,
    /// `task_struct.thread.fsbase` (x86_64: the thread pointer, glibc's `pthread_self()`, which
    /// CPython 3.9/3.10 thread states hold instead of the kernel's thread id);
    /// [`NO_FIELD`] where the architecture has none.
    pub task_fsbase_offset: u32,
}

/// A `DispatchConfig` offset the kernel does not have.
pub const NO_FIELD: u32 = u32::MAX;

const _: () = assert!(core::mem::size_of::<DispatchConfig>() == 72);

crate::pod!(DispatchConfig);
