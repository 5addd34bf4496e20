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
    /// `PyInterpreterState.threads.head`.
    pub interp_threads_head: u32,
    /// `PyThreadState.next`, `.native_thread_id`.
    pub tstate_next: u32,
    pub tstate_native_thread_id: u32,
    /// `PyThreadState.cframe` (3.11, 3.12); with `cframe_current_frame` = [`PY_NO_OFFSET`]
    /// the thread state holds the current frame itself at this offset (3.13).
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame`.
    pub cframe_current_frame: u32,
    /// Where in `_PyInterpreterFrame` the [`PY_FRAME_WINDOW`] bytes read per frame start, and
    /// where in that window `f_code` (`f_executable` in 3.13), `previous` and `prev_instr`
    /// (`instr_ptr` in 3.13) are: one read per frame instead of three.
    pub frame_window: u32,
    pub window_code: u32,
    pub window_previous: u32,
    pub window_instr: u32,
    pub _pad: u32,
}

/// Bytes of a frame read at once (the three pointers a frame step needs lie within them).
pub const PY_FRAME_WINDOW: usize = 32;

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

const _: () = assert!(core::mem::size_of::<PyProc>() == 48);
const _: () = assert!(core::mem::size_of::<PyStackBody>() == 8 + 16 * PY_STACK_DEPTH);
