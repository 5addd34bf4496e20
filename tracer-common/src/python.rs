//! Python call sites of SQL statements: the kernel walks the sending thread's CPython frame
//! chain when a SQL client sends, and records each frame's code object and instruction pointer;
//! user space reads the code objects' names, files and line tables from the process.
//!
//! Per process (`PY_PROCS`, by tgid): the interpreter's address and the struct offsets of its
//! version, which user space finds (the interpreter from the binary's symbols, the offsets from
//! its table of supported versions). A process not in the map gets no stacks.

/// `HashMap<u32, PyProc>`: the CPython processes whose SQL sends carry a stack.
pub const PY_PROCS: &str = "PY_PROCS";
pub const PY_PROCS_ENTRIES: u32 = 4096;
/// Thread states walked to find the sending thread's.
pub const PY_THREADS_MAX: u32 = 64;
/// Frames recorded per stack (from the innermost); deeper ones are cut (`truncated`).
pub const PY_STACK_DEPTH: usize = 64;
/// A `PyProc` offset that does not apply to the version.
pub const PY_NO_OFFSET: u32 = u32::MAX;

/// Where to find a process's thread states and frames (offsets in bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyProc {
    /// The `PyInterpreterState` (the main interpreter).
    pub interp: u64,
    /// `PyInterpreterState.threads.head` (`.tstate_head` before 3.11).
    pub interp_threads_head: u32,
    /// `PyThreadState.next`.
    pub tstate_next: u32,
    /// Where the thread state holds its thread's id: `.native_thread_id` (3.11+, the kernel's
    /// thread id), `.thread_id` (3.9, 3.10: its `pthread_t`); `thread_key` says which.
    pub tstate_thread_id: u32,
    /// `PyThreadState.cframe` (3.11, 3.12); with `cframe_current_frame` = [`PY_NO_OFFSET`]
    /// the thread state holds the current frame itself at this offset (`.frame` in 3.9 and
    /// 3.10, `.current_frame` in 3.13).
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame`.
    pub cframe_current_frame: u32,
    /// Where in the frame (`_PyInterpreterFrame`, `PyFrameObject` before 3.11) the
    /// `frame_window_len` bytes read per frame start, and where in that window the code object
    /// (`f_code`, `f_executable` in 3.13), the previous frame (`previous`, `f_back`) and the
    /// position (`prev_instr`, `instr_ptr` in 3.13, the int `f_lasti` before 3.11) are: one
    /// read per frame instead of three.
    pub frame_window: u32,
    /// At most [`PY_FRAME_WINDOW`]: no more than the version needs, as a frame may end a page.
    pub frame_window_len: u32,
    pub window_code: u32,
    pub window_previous: u32,
    pub window_instr: u32,
    /// [`PY_KEY_TID`] or [`PY_KEY_PTHREAD`].
    pub thread_key: u32,
}

/// The thread state's id is the kernel's thread id.
pub const PY_KEY_TID: u32 = 0;
/// The thread state's id is the thread's `pthread_t`, its thread pointer (`fsbase`).
pub const PY_KEY_PTHREAD: u32 = 1;

/// Most bytes of a frame read at once (the three fields a frame step needs lie within them:
/// 32 bytes in 3.11, 64 in 3.12 and 3.13, 88 in 3.9, 80 in 3.10).
pub const PY_FRAME_WINDOW: usize = 128;

/// One frame: its code object and the instruction it is at (both addresses in the process).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PyFrameRef {
    pub code: u64,
    pub instr: u64,
}

/// What follows a `PyStack` event's header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyStackBody {
    /// Frames recorded, innermost first.
    pub depth: u32,
    /// 1 when the stack was deeper than [`PY_STACK_DEPTH`].
    pub truncated: u32,
    pub frames: [PyFrameRef; PY_STACK_DEPTH],
}

crate::pod!(PyProc, PyFrameRef, PyStackBody);

const _: () = assert!(core::mem::size_of::<PyProc>() == 56);
const _: () = assert!(core::mem::size_of::<PyStackBody>() == 8 + 16 * PY_STACK_DEPTH);
