//! Loads the kernel programs: fills in `CONFIG`, sizes the maps for this machine, and attaches
//! every probe the settings want (see [`crate::probes`]).

use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    programs::{BtfTracePoint, ProgramError},
};
use aya_log::EbpfLogger;
use tracer_common::{
    config::Config,
    maps::{CONFIG_GLOBAL, SQL_EVENTS, SQL_EVENTS_BYTES, SQL_SCRATCH, SYSCALL_INFLIGHT, TRACED},
    process::TGIDS_PER_ELEMENT,
};

use crate::{
    kernel::btf::{BtfError, KernelBtf},
    probes::{PROBES, Probe},
    settings::Settings,
    syscall_names::Arch,
};

/// The object built by build.rs from tracer-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Largest in-flight table: 2^16 slots (1 MiB). Smaller pid_max gets one slot per PID.
const MAX_INFLIGHT_SLOTS: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// The binary was built with AYA_BUILD_SKIP and carries no kernel programs.
    #[error("this scalp-bpf binary was built without its kernel programs (AYA_BUILD_SKIP)")]
    NoObject,
    #[error("cannot read /proc/sys/kernel/pid_max: {0}")]
    PidMax(std::io::Error),
    /// The kernel refused the object or a map.
    #[error("the kernel refused scalp-bpf's programs: {0}")]
    Object(#[source] aya::EbpfError),
    /// A program failed to load or attach.
    #[error("cannot attach {program} to tracepoint {tracepoint}: {source}")]
    Attach {
        program: &'static str,
        tracepoint: &'static str,
        source: ProgramError,
    },
    #[error("the object has no program {0}")]
    MissingProgram(&'static str),
    #[error("this architecture ({0}) is not supported")]
    Arch(String),
}

impl LoadError {
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            LoadError::NoObject => crate::exit::ExitCode::Internal,
            _ => crate::exit::ExitCode::KernelUnsupported,
        }
    }
}

/// The loaded, attached programs and their maps.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub logger: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Number of `TRACED` elements.
    pub traced_elements: u32,
    pub arch: Arch,
}

/// Fills in the `CONFIG` global from the settings and the kernel's BTF.
pub fn config(
    settings: &Settings,
    kbtf: &KernelBtf,
    pid_max: u32,
    arch: Arch,
) -> Result<Config, LoadError> {
    let inflight_slots = pid_max.next_power_of_two().min(MAX_INFLIGHT_SLOTS);
    let exit_args = kbtf.require_tracepoint("sched_process_exit")?;
    let [rt_sigreturn_nr, clone_nr, clone3_nr, fork_nr, vfork_nr] = arch.special_nrs();
    let arg = |i: usize| -> Result<u32, BtfError> {
        let (field, extra) = arch.regs_args()[i];
        Ok(kbtf.field_offset("pt_regs", field)? + extra)
    };
    let off = |s: &str, f: &str| kbtf.field_offset(s, f);
    let sk = |f: &str| kbtf.path_offset(&[("sock", "__sk_common"), ("sock_common", f)]);
    let bit = |b: &str| kbtf.enum_value("req_flag_bits", b);
    // Block I/O needs these only when it is on: a kernel without them can still trace syscalls.
    let (rq_part, rq_len, rq_flags, bdev_dev, host, sync, fua, preflush, meta, rq_q, q_disk, part0) =
        if settings.blockio {
            (
                off("request", "part")?,
                off("request", "__data_len")?,
                off("request", "cmd_flags")?,
                off("block_device", "bd_dev")?,
                off("address_space", "host")?,
                bit("__REQ_SYNC")?,
                bit("__REQ_FUA")?,
                bit("__REQ_PREFLUSH")?,
                bit("__REQ_META")?,
                off("request", "q")?,
                off("request_queue", "disk")?,
                off("gendisk", "part0")?,
            )
        } else {
            Default::default()
        };
    Ok(Config {
        inflight_mask: inflight_slots - 1,
        syscall_latency: u32::from(settings.syscall_latency.measures()),
        watch_exec: u32::from(settings.watch_exec),
        exit_has_group_dead: u32::from(exit_args >= 2),
        traced_elements: pid_max.div_ceil(TGIDS_PER_ELEMENT),
        exit_nr: arch.exit_nr(),
        exit_group_nr: arch.exit_group_nr(),
        rt_sigreturn_nr,
        clone_nr,
        clone3_nr,
        fork_nr,
        vfork_nr,
        fileio: u32::from(settings.fileio),
        files: u32::from(settings.files.is_some()),
        sql: u32::from(settings.sql.is_some()),
        sql_capture: settings.sql.as_ref().map_or(0, |s| s.capture),
        sql_wakeup_bytes: settings.sql.as_ref().map_or(0, |s| s.ring_bytes / 4),
        blockio: u32::from(settings.blockio),
        block_fallback: u32::from(settings.block_fallback),
        regs_syscall_nr_offset: kbtf.field_offset("pt_regs", arch.regs_syscall_nr_field())?,
        regs_arg0_offset: arg(0)?,
        regs_arg1_offset: arg(1)?,
        regs_arg2_offset: arg(2)?,
        task_pid_offset: kbtf.field_offset("task_struct", "pid")?,
        task_tgid_offset: kbtf.field_offset("task_struct", "tgid")?,
        task_start_boottime_offset: kbtf.field_offset("task_struct", "start_boottime")?,
        task_exit_code_offset: kbtf.field_offset("task_struct", "exit_code")?,
        task_signal_offset: kbtf.field_offset("task_struct", "signal")?,
        signal_live_offset: kbtf.field_offset("signal_struct", "live")?,
        task_mm_offset: kbtf.field_offset("task_struct", "mm")?,
        mm_arg_start_offset: kbtf.field_offset("mm_struct", "arg_start")?,
        mm_arg_end_offset: kbtf.field_offset("mm_struct", "arg_end")?,
        task_files_offset: off("task_struct", "files")?,
        task_flags_offset: off("task_struct", "flags")?,
        files_fdt_offset: off("files_struct", "fdt")?,
        fdt_max_fds_offset: off("fdtable", "max_fds")?,
        fdt_fd_offset: off("fdtable", "fd")?,
        file_inode_offset: off("file", "f_inode")?,
        file_dentry_offset: kbtf.path_offset(&[("file", "f_path"), ("path", "dentry")])?,
        dentry_name_offset: kbtf.path_offset(&[("dentry", "d_name"), ("qstr", "name")])?,
        inode_mode_offset: off("inode", "i_mode")?,
        inode_ino_offset: off("inode", "i_ino")?,
        inode_sb_offset: off("inode", "i_sb")?,
        sb_dev_offset: off("super_block", "s_dev")?,
        file_private_data_offset: off("file", "private_data")?,
        socket_sk_offset: off("socket", "sk")?,
        sk_family_offset: sk("skc_family")?,
        sk_dport_offset: sk("skc_dport")?,
        sk_num_offset: sk("skc_num")?,
        sk_daddr_offset: sk("skc_daddr")?,
        sk_rcv_saddr_offset: sk("skc_rcv_saddr")?,
        // Kernels without IPv6 lack these; IPv6 connections then show no addresses.
        sk_v6_daddr_offset: sk("skc_v6_daddr").unwrap_or(0),
        sk_v6_rcv_saddr_offset: sk("skc_v6_rcv_saddr").unwrap_or(0),
        unix_peer_offset: off("unix_sock", "peer")?,
        unix_addr_offset: off("unix_sock", "addr")?,
        unix_address_len_offset: off("unix_address", "len")?,
        unix_address_name_offset: off("unix_address", "name")?,
        rq_part_offset: rq_part,
        rq_data_len_offset: rq_len,
        rq_cmd_flags_offset: rq_flags,
        bdev_dev_offset: bdev_dev,
        rq_q_offset: rq_q,
        queue_disk_offset: q_disk,
        disk_part0_offset: part0,
        mapping_host_offset: host,
        req_sync_bit: sync,
        req_fua_bit: fua,
        req_preflush_bit: preflush,
        req_meta_bit: meta,
    })
}

/// Loads the object and attaches the wanted probes.
pub fn load(settings: &Settings, kbtf: &KernelBtf) -> Result<Loaded, LoadError> {
    let probes: Vec<&Probe> = PROBES.iter().filter(|p| (p.wanted)(settings)).collect();
    load_with(settings, kbtf, &probes)
}

/// Loads the object and attaches only `probes`.
pub fn load_with(
    settings: &Settings,
    kbtf: &KernelBtf,
    probes: &[&Probe],
) -> Result<Loaded, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let arch = Arch::host().map_err(LoadError::Arch)?;
    let pid_max = crate::kernel::pid_max().map_err(LoadError::PidMax)?;
    let config = config(settings, kbtf, pid_max, arch)?;
    for probe in probes {
        kbtf.require_tracepoint(probe.tracepoint)?;
    }
    let btf = Btf::parse_file(kbtf.path(), Endianness::default())
        .map_err(|e| LoadError::Object(aya::EbpfError::BtfError(e)))?;
    let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| LoadError::PidMax(e))? as u32;

    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global(CONFIG_GLOBAL, &config, true)
        .map_max_entries(TRACED, config.traced_elements)
        .map_max_entries(SYSCALL_INFLIGHT, config.inflight_mask + 1)
        .map_max_entries(SQL_SCRATCH, nr_cpus)
        .map_max_entries(
            SQL_EVENTS,
            settings
                .sql
                .as_ref()
                .map_or(SQL_EVENTS_BYTES, |s| s.ring_bytes),
        )
        .load(OBJECT)
        .map_err(LoadError::Object)?;

    // Kernel-side diagnostics (aya-log) go to our log; absent when the object logs nothing.
    let logger = EbpfLogger::init(&mut ebpf).ok();

    for probe in probes {
        let attach_err = |source| LoadError::Attach {
            program: probe.program,
            tracepoint: probe.tracepoint,
            source,
        };
        let program: &mut BtfTracePoint = ebpf
            .program_mut(probe.program)
            .ok_or(LoadError::MissingProgram(probe.program))?
            .try_into()
            .map_err(attach_err)?;
        program.load(probe.tracepoint, &btf).map_err(attach_err)?;
        program.attach().map_err(attach_err)?;
        tracing::debug!(program = probe.program, tracer = probe.tracer, "attached");
    }
    Ok(Loaded {
        ebpf,
        logger,
        traced_elements: config.traced_elements,
        arch,
    })
}
