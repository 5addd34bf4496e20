//! Process lifecycle: fork (a traced process's children are traced from their first syscall),
//! exec (names change; late starters are found), exit (the last thread ends the process).
//!
//! These run a few times per process, never per syscall, so they read `task_struct` fields with
//! `bpf_probe_read_kernel` at offsets the loader took from the kernel's BTF.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task_btf,
        bpf_ktime_get_boot_ns, bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, RingBuf, ring_buf::RingBufEntry},
    programs::BtfTracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::{
    drops::Reasons as _,
    process::{
        ARGS_BYTES, EXIT_REGS_HELPER, EXIT_REGS_STACK, PROCESS_EVENTS_BYTES, ProcessConfig,
        ProcessDrop, ProcessEvent, ProcessEventKind, TRACED_FLAG, next_traced_byte,
    },
};

use crate::{
    kernel::{config_global, count_drop, current_task, read_at, read_ptr, setting},
    syscalls,
    targets::{set_traced_byte, traced_byte, traced_generation},
};

config_global!(PROCESS_CONFIG: ProcessConfig);

#[map]
static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(PROCESS_EVENTS_BYTES, 0);

#[map]
static PROCESS_DROPS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(ProcessDrop::ALL.len() as u32, 0);

/// Counts a loss of the process tracker.
#[inline(always)]
pub fn dropped(reason: ProcessDrop) {
    count_drop(&PROCESS_DROPS, reason.index());
}

/// Room for one event in the ring, or None (counted as a drop) when it is full.
#[inline(always)]
fn reserve() -> Option<RingBufEntry<ProcessEvent>> {
    let entry = PROCESS_EVENTS.reserve::<ProcessEvent>(0);
    if entry.is_none() {
        dropped(ProcessDrop::EventLost);
    }
    entry
}

fn emit(kind: ProcessEventKind, tgid: u32, parent_tgid: u32, traced: u8, task: *const u8) {
    if let Some(entry) = reserve() {
        submit(entry, kind, tgid, parent_tgid, traced, task);
    }
}

/// Fills in and sends a reserved event (inlined: BPF functions take at most five arguments).
#[inline(always)]
fn submit(
    mut entry: RingBufEntry<ProcessEvent>,
    kind: ProcessEventKind,
    tgid: u32,
    parent_tgid: u32,
    traced: u8,
    task: *const u8,
) {
    let event = entry.as_mut_ptr();
    let exit_code = if kind == ProcessEventKind::Exit {
        read_at::<i32>(task, setting!(PROCESS_CONFIG.task_exit_code_offset)).unwrap_or(0)
    } else {
        0
    };
    // SAFETY: `event` points to a reserved record of the right size; every field is written
    // before submit, `args` up to `args_len` (the reader ignores the rest).
    unsafe {
        (*event).kind = kind as u32;
        (*event).tgid = tgid;
        (*event).parent_tgid = parent_tgid;
        (*event).exit_code = exit_code;
        (*event).traced = traced;
        (*event)._pad = [0; 7];
        (*event).time_ns = bpf_ktime_get_boot_ns();
        (*event).start_boottime_ns =
            read_at::<u64>(task, setting!(PROCESS_CONFIG.task_start_boottime_offset)).unwrap_or(0);
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event)._pad2 = 0;
        (*event).args_len = 0;
        if kind == ProcessEventKind::Exec {
            (*event).args_len = read_args(task, &mut (*event).args);
        }
    }
    entry.submit(0);
}

/// Copies the start of the current process's command line (`mm->arg_start..arg_end`) into
/// `args`; returns the bytes copied.
#[inline(always)]
fn read_args(task: *const u8, args: &mut [u8; ARGS_BYTES]) -> u32 {
    let mm =
        read_at::<u64>(task, setting!(PROCESS_CONFIG.task_mm_offset)).unwrap_or(0) as *const u8;
    let (Some(start), Some(end)) = (
        read_at::<u64>(mm, setting!(PROCESS_CONFIG.mm_arg_start_offset)),
        read_at::<u64>(mm, setting!(PROCESS_CONFIG.mm_arg_end_offset)),
    ) else {
        return 0;
    };
    let mut len = end.saturating_sub(start);
    if len > ARGS_BYTES as u64 {
        len = ARGS_BYTES as u64;
    }
    // SAFETY: the helper copies at most `len` (≤ ARGS_BYTES) bytes of user memory into `args`
    // through a fault-safe path; on failure nothing is used.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            args.as_mut_ptr().cast(),
            len as u32,
            start as *const core::ffi::c_void,
        )
    };
    if ret == 0 { len as u32 } else { 0 }
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, run by the parent.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if traced_generation(parent_tgid).is_none() {
        return 0;
    }
    let child: *const u8 = ctx.arg(1);
    let (Some(pid), Some(tgid)) = (
        read_at::<u32>(child, setting!(PROCESS_CONFIG.task_pid_offset)),
        read_at::<u32>(child, setting!(PROCESS_CONFIG.task_tgid_offset)),
    ) else {
        return 0;
    };
    if pid != tgid {
        // A new thread: already covered by its process's tgid.
        return 0;
    }
    // The event's room first: a child is traced only if user space will hear of it. A child it
    // never heard of would leave map entries that nothing reaps; this way a full ring costs
    // that child's (and its descendants') tracing, counted as a lost process event.
    let Some(entry) = reserve() else {
        return 0;
    };
    let byte = next_traced_byte(traced_byte(tgid));
    if set_traced_byte(tgid, byte) {
        debug!(&ctx, "tracing child {} of {}", tgid, parent_tgid);
        submit(
            entry,
            ProcessEventKind::Fork,
            tgid,
            parent_tgid,
            byte,
            child,
        );
    } else {
        entry.discard(0);
    }
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`, run by
/// the process after its new image is in place (comm already changed).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(_ctx: BtfTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let byte = traced_byte(tgid);
    if byte & TRACED_FLAG != 0 || setting!(PROCESS_CONFIG.watch_exec) != 0 {
        emit(ProcessEventKind::Exec, tgid, 0, byte, current_task());
    }
    0
}

/// The syscall the exiting thread is in (exit or exit_group, unless it was killed), from its saved
/// registers: through `bpf_task_pt_regs` where the kernel has it (5.15+), else at the top of its
/// kernel stack. The loader's choice is a read-only setting: the verifier never walks the branch
/// not taken, so older kernels never see the helpers they lack.
#[inline(always)]
fn exit_syscall_nr() -> u32 {
    let how = setting!(PROCESS_CONFIG.exit_regs);
    let regs = if how == EXIT_REGS_HELPER {
        // SAFETY: the helpers take the current task, which is alive while it runs this program.
        unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8 }
    } else if how == EXIT_REGS_STACK {
        match read_ptr(current_task(), setting!(PROCESS_CONFIG.task_stack_offset)) {
            Some(stack) => stack.wrapping_add(setting!(PROCESS_CONFIG.stack_regs_offset) as usize),
            None => return u32::MAX,
        }
    } else {
        return u32::MAX;
    };
    read_at::<u32>(regs, setting!(PROCESS_CONFIG.regs_syscall_nr_offset)).unwrap_or(u32::MAX)
}

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`, run by each exiting thread.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(generation) = traced_generation(tgid) else {
        return 0;
    };
    syscalls::on_thread_exit(tgid, generation, pid_tgid as u32, exit_syscall_nr());

    let task = current_task();
    let group_dead = if setting!(PROCESS_CONFIG.exit_has_group_dead) != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        let signal = read_at::<u64>(task, setting!(PROCESS_CONFIG.task_signal_offset)).unwrap_or(0)
            as *const u8;
        read_at::<i32>(signal, setting!(PROCESS_CONFIG.signal_live_offset)) == Some(0)
    };
    if group_dead {
        let byte = traced_byte(tgid) & !TRACED_FLAG;
        set_traced_byte(tgid, byte);
        debug!(&ctx, "traced process {} ended", tgid);
        emit(ProcessEventKind::Exit, tgid, 0, byte, task);
    }
    0
}
