//! The Python stack of a SQL client's send (at sys_enter, before the bytes go): for a process in
//! `PY_PROCS` sending on a socket captured as a MySQL or PostgreSQL client connection, find the
//! sending thread's `PyThreadState` in its interpreter's thread list (by native thread id), then
//! walk its frames from the innermost, recording each frame's code object and instruction
//! pointer. User space names them.

use aya_ebpf::{
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::{bpf_probe_read_user, bpf_ringbuf_output},
    },
    macros::map,
    maps::{HashMap, RingBuf},
};
use tracer_common::{
    python::{
        PY_FRAME_WINDOW, PY_KEY_PTHREAD, PY_NO_OFFSET, PY_PROCS_ENTRIES, PY_STACK_DEPTH,
        PY_THREADS_MAX, PyProc, PyStackBody,
    },
    sockets::{
        DIR_SENT, EventKind, HEADER_BYTES, Protocol, SIDE_CLIENT, SOCK_CAPTURE, SOCK_PENDING,
        SocketDrop, SocketEventHeader,
    },
};

use crate::{dispatch, kernel::read_at, sockets};

#[map]
static PY_PROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(PY_PROCS_ENTRIES, 0);

/// A record of the socket ring: the common header, then the stack.
#[repr(C)]
pub struct PyStackRecord {
    pub header: SocketEventHeader,
    pub body: PyStackBody,
}

/// A u64 of the process's memory (0 when it cannot be read).
#[inline(always)]
fn user_u64(addr: u64) -> u64 {
    // SAFETY: a fault-safe copy of user memory; a bad address only fails.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// A send (write, sendto, sendmsg…) on descriptor `fd` is about to start.
#[inline(always)]
pub fn on_send(tgid: u32, generation: u32, tid: u32, fd: u32) {
    let Some(p) = PY_PROCS.get_ptr(tgid) else {
        return;
    };
    let Some((file, inode)) = dispatch::resolve(fd) else {
        return;
    };
    let Some(ino) = read_at::<u64>(inode, dispatch::inode_ino_offset()) else {
        return;
    };
    // Not classified yet (the first send on a connection older than the trace, a PostgreSQL
    // startup message): its peer's port tells.
    // SAFETY: a copy out of the map value.
    let Some(sock) = (unsafe { sockets::SOCKET_VERDICTS.get(ino) })
        .copied()
        .filter(|s| s.class != SOCK_PENDING)
        .or_else(|| sockets::sql_client_by_port(file))
    else {
        return;
    };
    if sock.class != SOCK_CAPTURE
        || sock.side != SIDE_CLIENT
        || (sock.protocol != Protocol::Mysql as u8
            && sock.protocol != Protocol::Postgres as u8
            && sock.protocol != Protocol::Unknown as u8)
    {
        return;
    }
    // SAFETY: a map value, valid for the program's run.
    let p: &PyProc = unsafe { &*p };
    // 3.11+ thread states hold the kernel's thread id; 3.9 and 3.10 only the pthread_t, which
    // glibc keeps in the thread pointer register (fsbase).
    let key = if p.thread_key == PY_KEY_PTHREAD {
        dispatch::current_fsbase()
    } else {
        u64::from(tid)
    };
    if key == 0 {
        sockets::dropped(SocketDrop::PythonThreadNotFound);
        return;
    }
    let mut tstate = user_u64(p.interp + u64::from(p.interp_threads_head));
    let mut found = 0u64;
    let (mut seen, mut last) = (0u32, 0u64);
    for _ in 0..PY_THREADS_MAX {
        if tstate == 0 {
            break;
        }
        if user_u64(tstate + u64::from(p.tstate_thread_id)) == key {
            found = tstate;
            break;
        }
        seen += 1;
        last = tstate;
        tstate = user_u64(tstate + u64::from(p.tstate_next));
    }
    // A process forked by C code that initialized Python before the fork (uWSGI's workers,
    // without --enable-threads) keeps the parent's thread id in its one thread state: the
    // main thread sending with one thread state in the list is that state's thread.
    if found == 0 && tid == tgid && seen == 1 {
        found = last;
    }
    if found == 0 {
        sockets::dropped(SocketDrop::PythonThreadNotFound);
        return;
    }
    let mut frame = user_u64(found + u64::from(p.tstate_frame));
    if p.cframe_current_frame != PY_NO_OFFSET && frame != 0 {
        frame = user_u64(frame + u64::from(p.cframe_current_frame));
    }
    // Built in the CPU's scratch record, then sent at its length: a stack of 20 frames takes
    // 384 bytes of the ring, not the 1,088 of the deepest one.
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = sockets::SOCKET_SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    let rec = scratch as *mut PyStackRecord;
    // One frame per iteration, with no other branch than the end of the chain: the verifier
    // then sees one state per depth (a data-dependent skip would double them at every frame).
    // Frames owned by the C stack (3.12+ shims) are recorded too; user space leaves them out.
    // The window's length is the version's (a fixed maximum could run past the end of a frame
    // at the end of a page): bounded to 1..=PY_FRAME_WINDOW for the verifier. A failed read
    // leaves zeros (the helper clears the `len` bytes), which ends the chain; bytes past `len`
    // are never looked at, so the buffer is cleared once, not per frame.
    let len = ((p.frame_window_len.wrapping_sub(1)) & (PY_FRAME_WINDOW as u32 - 1)) + 1;
    let mut w = [0u64; PY_FRAME_WINDOW / 8];
    let mut depth = 0usize;
    while depth < PY_STACK_DEPTH {
        if frame == 0 {
            break;
        }
        // SAFETY: a fault-safe copy of at most PY_FRAME_WINDOW bytes of user memory into `w`.
        unsafe {
            bpf_probe_read_user(
                w.as_mut_ptr() as *mut core::ffi::c_void,
                len,
                (frame + u64::from(p.frame_window)) as *const core::ffi::c_void,
            )
        };
        let word = |offset: u32| w[(offset as usize / 8) & (PY_FRAME_WINDOW / 8 - 1)];
        // SAFETY: depth < PY_STACK_DEPTH indexes the reserved record's frames.
        unsafe {
            let slot = &mut (*rec).body.frames[depth & (PY_STACK_DEPTH - 1)];
            slot.code = word(p.window_code);
            slot.instr = word(p.window_instr);
        }
        depth += 1;
        frame = word(p.window_previous);
    }
    // SAFETY: every header and body field of the reserved record is written before submit
    // (frames past `depth` are not read).
    unsafe {
        (*rec).body.depth = depth as u32;
        (*rec).body.truncated = u32::from(frame != 0);
        (*rec).header = SocketEventHeader {
            kind: EventKind::PyStack as u8,
            direction: DIR_SENT,
            protocol: sock.protocol,
            family: sock.family,
            tgid,
            generation,
            tid,
            conn: ino,
            time_ns: bpf_ktime_get_ns(),
            len: 0,
            captured: (PY_STACK_HEAD + 16 * depth) as u32,
            side: sock.side,
            _pad: [0; 7],
            thread_syscalls: 0,
        };
    }
    let size = (HEADER_BYTES + PY_STACK_HEAD + 16 * (depth & (2 * PY_STACK_DEPTH - 1))) as u64;
    // SAFETY: the record is the first `size` bytes of the scratch record, which holds a whole
    // PyStackRecord (depth ≤ PY_STACK_DEPTH).
    let r = unsafe {
        bpf_ringbuf_output(
            &sockets::SOCKET_EVENTS as *const RingBuf as *mut core::ffi::c_void,
            rec as *mut core::ffi::c_void,
            size,
            sockets::wakeup_flag(),
        )
    };
    if r != 0 {
        sockets::dropped(SocketDrop::PythonStackLost);
    }
}

/// Bytes of a stack's body before its frames (depth, truncated).
const PY_STACK_HEAD: usize = 8;
const _: () = assert!(
    core::mem::size_of::<PyStackRecord>() <= sockets::SCRATCH_BYTES
        && core::mem::size_of::<PyStackBody>() == PY_STACK_HEAD + 16 * PY_STACK_DEPTH
);
