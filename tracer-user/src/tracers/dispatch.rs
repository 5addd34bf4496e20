//! The syscall dispatch's user side: it attaches sys_enter and sys_exit once for all tracers,
//! writes its settings (where the arguments are, the special syscall numbers, the walk to a
//! descriptor's inode), and fills the per-syscall class table from every enabled tracer's hooks
//! (`tracer_common::dispatch`) before any process is traced.

use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use tracer_common::{
    dispatch::{
        self as common, DispatchConfig, KIND_FILE, KIND_RESOLVE, KIND_SHIFT, KIND_SOCKET,
        NOT_BYTES, SHAPE_SHIFT, SYSCALL_CLASSES, SYSCALL_NRS, shape,
    },
    fileio::{FileKind, FileOp},
};

use super::{Build, Registration};
use crate::{
    kernel::{
        btf::BtfError,
        maps::{self, MapAccessError},
        support::{Choice, Need, Otherwise, Way},
    },
    loader::KernelSetup,
    probes::Probe,
    settings::Settings,
    syscall_names::Arch,
};

pub static REGISTRATION: Registration = Registration {
    name: "dispatch",
    selectable: false,
    wanted: super::always,
    probes: &[
        Probe::new("sys_enter", "sys_enter", &["pt_regs", ""]).when(wants_enter),
        Probe::new("sys_exit", "sys_exit", &["pt_regs", ""]),
    ],
    tables: &[],
    metrics: &[],
    drops: None,
    setup,
    hooks: super::no_hooks,
    build,
};

/// sys_enter is attached for the syscall tracer's latency and the capture's close hook.
fn wants_enter(s: &Settings) -> bool {
    super::syscalls::measures_latency(s) || super::sockets::wants_enter(s)
}

/// How programs read the current task's fields (the walk to a descriptor's file, the flusher
/// test): plain loads through a BTF pointer where the kernel hands one out, else probe reads
/// (as exact, a little slower). Any tracer that reads the current task takes this choice.
pub const CURRENT_TASK: Choice = Choice {
    what: "fields of the current task",
    ways: &[
        Way {
            value: 1,
            name: "bpf_get_current_task_btf (plain loads)",
            needs: &[Need::Helper("get_current_task_btf")],
        },
        Way {
            value: 0,
            name: "bpf_get_current_task and probe reads",
            needs: &[],
        },
    ],
    otherwise: Otherwise::Unavailable,
};

fn setup(k: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    let task_btf = k.choose(&CURRENT_TASK)?.unwrap_or(0);
    let b = k.btf;
    let off = |s: &str, f: &str| b.field_offset(s, f);
    let arch = k.arch;
    let arg = |i: usize| -> Result<u32, BtfError> {
        let (field, extra) = arch.regs_args()[i];
        Ok(b.field_offset("pt_regs", field)? + extra)
    };
    let [rt_sigreturn_nr, clone_nr, clone3_nr, fork_nr, vfork_nr] = arch.special_nrs();
    let config = DispatchConfig {
        regs_syscall_nr_offset: off("pt_regs", arch.regs_syscall_nr_field())?,
        regs_arg0_offset: arg(0)?,
        regs_arg1_offset: arg(1)?,
        regs_arg2_offset: arg(2)?,
        rt_sigreturn_nr,
        clone_nr,
        clone3_nr,
        fork_nr,
        vfork_nr,
        task_files_offset: off("task_struct", "files")?,
        files_fdt_offset: off("files_struct", "fdt")?,
        fdt_max_fds_offset: off("fdtable", "max_fds")?,
        fdt_fd_offset: off("fdtable", "fd")?,
        file_inode_offset: off("file", "f_inode")?,
        inode_mode_offset: off("inode", "i_mode")?,
        inode_ino_offset: off("inode", "i_ino")?,
        task_btf,
        task_fsbase_offset: off("task_struct", "thread")
            .and_then(|t| Ok(t + off("thread_struct", "fsbase")?))
            .unwrap_or(common::NO_FIELD),
    };
    k.global(common::CONFIG, &config);
    Ok(())
}

/// What the dispatch knows about a syscall by its name: its I/O family, the kind of descriptor
/// it implies, whether its return value counts bytes, the shape of its buffer. 0 for syscalls
/// outside the read/write/sync families.
pub fn facts(name: &str) -> u32 {
    let Some(op) = FileOp::of_syscall(name) else {
        return 0;
    };
    let kind = match FileOp::implied_kind(name) {
        Some(FileKind::File) => KIND_FILE,
        Some(FileKind::Socket) => KIND_SOCKET,
        _ => KIND_RESOLVE,
    };
    let not_bytes = if name.ends_with("mmsg") { NOT_BYTES } else { 0 };
    op as u32 | (kind << KIND_SHIFT) | not_bytes | (shape::of_syscall(name) << SHAPE_SHIFT)
}

/// The class table for an architecture and the enabled registrations: per syscall number, its
/// facts and the hooks that want it (0 when none does).
pub fn classes(arch: Arch, settings: &Settings, enabled: &[&Registration]) -> Vec<u32> {
    (0..SYSCALL_NRS)
        .map(|nr| {
            let name = arch.syscall_name(nr);
            let hooks = enabled
                .iter()
                .fold(0, |acc, r| acc | (r.hooks)(settings, &name));
            if hooks == 0 { 0 } else { hooks | facts(&name) }
        })
        .collect()
}

fn build(ebpf: &mut Ebpf, b: &Build<'_>) -> super::Built {
    let mut table: Array<MapData, u32> = maps::take_as(ebpf, SYSCALL_CLASSES)?;
    for (nr, class) in classes(b.arch, b.settings, b.enabled)
        .into_iter()
        .enumerate()
    {
        if class != 0 {
            table
                .set(nr as u32, class, 0)
                .map_err(MapAccessError::of(SYSCALL_CLASSES))?;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use tracer_common::dispatch::{
        HOOK_FILEIO, HOOK_SOCKETS, KIND_MASK, OP_MASK, RESOLVE_FD, SHAPE_MASK,
    };

    use super::*;

    #[test]
    fn facts_say_family_kind_and_shape() {
        let write = facts("write");
        assert_eq!(write & OP_MASK, FileOp::Write as u32);
        assert_eq!((write & KIND_MASK) >> KIND_SHIFT, KIND_RESOLVE);
        assert_eq!((write & SHAPE_MASK) >> SHAPE_SHIFT, shape::CONTIGUOUS);
        let pread = facts("pread64");
        assert_eq!((pread & KIND_MASK) >> KIND_SHIFT, KIND_FILE);
        let recvmmsg = facts("recvmmsg");
        assert_ne!(recvmmsg & NOT_BYTES, 0);
        assert_eq!((recvmmsg & SHAPE_MASK) >> SHAPE_SHIFT, shape::MMSGHDR);
        assert_eq!(facts("getppid"), 0);
    }

    #[test]
    fn a_syscall_no_tracer_hooks_has_no_class() {
        let settings = Settings::minimal();
        let enabled = super::super::enabled(&settings);
        let table = classes(Arch::X86_64, &settings, &enabled);
        assert!(table.iter().all(|c| *c == 0), "only syscalls is on");
    }

    #[test]
    fn enabled_tracers_hook_their_syscalls() {
        let mut settings = Settings::minimal();
        settings.tracers = vec!["fileio".into(), "sql".into()];
        let enabled = super::super::enabled(&settings);
        let table = classes(Arch::X86_64, &settings, &enabled);
        // x86_64: 0 read, 1 write, 17 pread64, 45 recvfrom, 74 fsync, 39 getpid.
        assert_ne!(table[1] & HOOK_FILEIO, 0);
        assert_ne!(table[1] & HOOK_SOCKETS, 0);
        assert_ne!(
            table[1] & RESOLVE_FD,
            0,
            "write: kind unknown until resolved"
        );
        assert_ne!(table[74] & HOOK_FILEIO, 0);
        assert_eq!(table[74] & HOOK_SOCKETS, 0, "fsync moves no socket data");
        assert_eq!(table[17] & RESOLVE_FD, 0, "pread64 implies a file");
        assert_ne!(table[45] & RESOLVE_FD, 0, "the capture needs the socket");
        assert_eq!(table[39], 0);
    }
}
