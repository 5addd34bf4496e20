//! Settings the loader writes into the kernel programs' read-only data before loading them.
//!
//! The verifier treats loads from a frozen read-only map as constants, so branches on these
//! settings cost nothing at run time and field offsets read here are as good as compiled-in ones.

/// The `CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `SYSCALL_INFLIGHT` has `inflight_mask + 1` entries (a power of two).
    pub inflight_mask: u32,
    /// Measure syscall latency (1) or only count calls and errors (0).
    pub syscall_latency: u32,
    /// Send exec events of untraced processes too (to pick up late starters by name).
    pub watch_exec: u32,
    /// `sched_process_exit` passes `group_dead` (Linux ≥ 6.16); else read `signal->live`.
    pub exit_has_group_dead: u32,
    /// Number of `TRACED` elements (pid_max / 8, rounded up).
    pub traced_elements: u32,
    /// The file I/O tracer is on (1) or off (0).
    pub fileio: u32,
    /// `--files`: also count bytes per file (1).
    pub files: u32,
    /// The SQL tracer is on (1) or off (0).
    pub sql: u32,
    /// Bytes captured per send/receive syscall on a SQL connection (a power of two ≤
    /// `SQL_CAPTURE_MAX`).
    pub sql_capture: u32,
    /// Bytes waiting in `SQL_EVENTS` past which a record wakes the reader; below, the reader
    /// polls (a wakeup per send/receive would cost the traced client more than the capture).
    pub sql_wakeup_bytes: u32,
    /// The block I/O tracer is on (1) or off (0).
    pub blockio: u32,
    /// Some block device does not account I/O (iostats=0): take submissions at block_rq_insert
    /// and block_rq_issue too, and completions at block_rq_complete.
    pub block_fallback: u32,
    /// Syscall numbers on this architecture (`NO_SYSCALL` where it has none): `exit` and
    /// `exit_group` never return; `rt_sigreturn` returns with the number -1 in the registers; the
    /// fork family returns 0 a second time, in the child, which did not make the call.
    pub exit_nr: u32,
    pub exit_group_nr: u32,
    pub rt_sigreturn_nr: u32,
    pub clone_nr: u32,
    pub clone3_nr: u32,
    pub fork_nr: u32,
    pub vfork_nr: u32,
    /// Offsets into `struct pt_regs`: the syscall number and the first three arguments as
    /// they stand at syscall exit (x86_64: orig_ax, di, si, dx; arm64: syscallno, orig_x0, regs[1], regs[2]).
    pub regs_syscall_nr_offset: u32,
    pub regs_arg0_offset: u32,
    pub regs_arg1_offset: u32,
    pub regs_arg2_offset: u32,
    /// Offsets into kernel structures, read from the running kernel's BTF.
    pub task_pid_offset: u32,
    pub task_tgid_offset: u32,
    pub task_start_boottime_offset: u32,
    pub task_exit_code_offset: u32,
    pub task_signal_offset: u32,
    pub signal_live_offset: u32,
    pub task_mm_offset: u32,
    pub mm_arg_start_offset: u32,
    pub mm_arg_end_offset: u32,
    pub task_files_offset: u32,
    /// task_struct.flags (PF_KTHREAD tells kernel threads, such as flushers, apart).
    pub task_flags_offset: u32,
    pub files_fdt_offset: u32,
    pub fdt_max_fds_offset: u32,
    pub fdt_fd_offset: u32,
    pub file_inode_offset: u32,
    pub file_dentry_offset: u32,
    pub dentry_name_offset: u32,
    pub inode_mode_offset: u32,
    pub inode_ino_offset: u32,
    pub inode_sb_offset: u32,
    pub sb_dev_offset: u32,
    /// Sockets: file.private_data (struct socket *), socket.sk, sock_common's family, ports and
    /// addresses, and for Unix sockets unix_sock.peer, unix_sock.addr, unix_address.len/name.
    pub file_private_data_offset: u32,
    pub socket_sk_offset: u32,
    pub sk_family_offset: u32,
    pub sk_dport_offset: u32,
    pub sk_num_offset: u32,
    pub sk_daddr_offset: u32,
    pub sk_rcv_saddr_offset: u32,
    pub sk_v6_daddr_offset: u32,
    pub sk_v6_rcv_saddr_offset: u32,
    pub unix_peer_offset: u32,
    pub unix_addr_offset: u32,
    pub unix_address_len_offset: u32,
    pub unix_address_name_offset: u32,
    pub rq_part_offset: u32,
    pub rq_data_len_offset: u32,
    pub rq_cmd_flags_offset: u32,
    pub bdev_dev_offset: u32,
    /// request.q, request_queue.disk, gendisk.part0: the whole disk, for requests without a
    /// partition (flushes).
    pub rq_q_offset: u32,
    pub queue_disk_offset: u32,
    pub disk_part0_offset: u32,
    pub mapping_host_offset: u32,
    /// Bit numbers of REQ_SYNC, REQ_FUA, REQ_PREFLUSH and REQ_META in `cmd_flags` (enum req_flag_bits).
    pub req_sync_bit: u32,
    pub req_fua_bit: u32,
    pub req_preflush_bit: u32,
    pub req_meta_bit: u32,
}

/// A syscall number no architecture uses.
pub const NO_SYSCALL: u32 = u32::MAX - 1;

const _: () = assert!(core::mem::size_of::<Config>() == 276);

impl Config {
    /// The value compiled into the object; the loader always overwrites it.
    pub const UNSET: Config = Config {
        inflight_mask: 0,
        syscall_latency: 0,
        watch_exec: 0,
        exit_has_group_dead: 0,
        traced_elements: 0,
        fileio: 0,
        files: 0,
        sql: 0,
        sql_capture: 0,
        sql_wakeup_bytes: 0,
        blockio: 0,
        block_fallback: 0,
        exit_nr: 0,
        exit_group_nr: 0,
        rt_sigreturn_nr: 0,
        clone_nr: 0,
        clone3_nr: 0,
        fork_nr: 0,
        vfork_nr: 0,
        regs_syscall_nr_offset: 0,
        regs_arg0_offset: 0,
        regs_arg1_offset: 0,
        regs_arg2_offset: 0,
        task_pid_offset: 0,
        task_tgid_offset: 0,
        task_start_boottime_offset: 0,
        task_exit_code_offset: 0,
        task_signal_offset: 0,
        signal_live_offset: 0,
        task_mm_offset: 0,
        mm_arg_start_offset: 0,
        mm_arg_end_offset: 0,
        task_files_offset: 0,
        task_flags_offset: 0,
        files_fdt_offset: 0,
        fdt_max_fds_offset: 0,
        fdt_fd_offset: 0,
        file_inode_offset: 0,
        file_dentry_offset: 0,
        dentry_name_offset: 0,
        inode_mode_offset: 0,
        inode_ino_offset: 0,
        inode_sb_offset: 0,
        sb_dev_offset: 0,
        file_private_data_offset: 0,
        socket_sk_offset: 0,
        sk_family_offset: 0,
        sk_dport_offset: 0,
        sk_num_offset: 0,
        sk_daddr_offset: 0,
        sk_rcv_saddr_offset: 0,
        sk_v6_daddr_offset: 0,
        sk_v6_rcv_saddr_offset: 0,
        unix_peer_offset: 0,
        unix_addr_offset: 0,
        unix_address_len_offset: 0,
        unix_address_name_offset: 0,
        rq_part_offset: 0,
        rq_data_len_offset: 0,
        rq_cmd_flags_offset: 0,
        bdev_dev_offset: 0,
        rq_q_offset: 0,
        queue_disk_offset: 0,
        disk_part0_offset: 0,
        mapping_host_offset: 0,
        req_sync_bit: 0,
        req_fua_bit: 0,
        req_preflush_bit: 0,
        req_meta_bit: 0,
    };
}
