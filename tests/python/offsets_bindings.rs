// The CPython struct offsets scalp-bpf reads, from py-spy's bindings of each version's headers
// (bindgen output, src/python_bindings/v3_*.rs): the only source here for the versions no Debian
// suite carries (3.10, 3.12), and a second one for the others. tests/test_python_sites.py
// compiles this with `--cfg py3NN` after the bindings, included as module `b`, and compares the
// "name offset" lines with tracer-user/src/python/offsets.json, as tests/python/offsets.c does
// from real headers.
use std::mem::{offset_of, size_of};

use b::*;

macro_rules! p {
    ($name:expr, $value:expr) => {
        println!("{} {}", $name, $value)
    };
}

fn main() {
    #[cfg(any(py39, py310))]
    {
        p!("interp_threads_head", offset_of!(_is, tstate_head));
        p!("tstate_thread_id", offset_of!(_ts, thread_id));
        p!("tstate_frame", offset_of!(_ts, frame));
        p!("frame_code", offset_of!(_frame, f_code));
        p!("frame_previous", offset_of!(_frame, f_back));
        p!("frame_instr", offset_of!(_frame, f_lasti));
    }
    #[cfg(any(py311, py312, py313))]
    {
        p!(
            "interp_threads_head",
            offset_of!(_is, threads) + offset_of!(_is_pythreads, head)
        );
        p!("tstate_native_thread_id", offset_of!(_ts, native_thread_id));
        p!("frame_previous", offset_of!(_PyInterpreterFrame, previous));
        p!("code_qualname", offset_of!(PyCodeObject, co_qualname));
        p!("code_adaptive", offset_of!(PyCodeObject, co_code_adaptive));
    }
    #[cfg(any(py311, py312))]
    {
        p!("tstate_frame", offset_of!(_ts, cframe));
        p!("cframe_current_frame", offset_of!(_PyCFrame, current_frame));
        p!("frame_code", offset_of!(_PyInterpreterFrame, f_code));
        p!("frame_instr", offset_of!(_PyInterpreterFrame, prev_instr));
    }
    // 3.12's C-stack shim frames run this code object.
    #[cfg(py312)]
    p!("interp_trampoline", offset_of!(_is, interpreter_trampoline));
    #[cfg(py313)]
    {
        p!("interp_runtime", offset_of!(_is, runtime));
        p!("tstate_frame", offset_of!(_ts, current_frame));
        p!("frame_code", offset_of!(_PyInterpreterFrame, f_executable));
        p!("frame_instr", offset_of!(_PyInterpreterFrame, instr_ptr));
    }
    p!("tstate_next", offset_of!(_ts, next));
    p!("code_filename", offset_of!(PyCodeObject, co_filename));
    p!("code_name", offset_of!(PyCodeObject, co_name));
    p!("code_firstlineno", offset_of!(PyCodeObject, co_firstlineno));
    #[cfg(py39)]
    p!("code_linetable", offset_of!(PyCodeObject, co_lnotab));
    #[cfg(not(py39))]
    p!("code_linetable", offset_of!(PyCodeObject, co_linetable));
    p!("bytes_sval", offset_of!(PyBytesObject, ob_sval));
    p!("var_size", offset_of!(PyVarObject, ob_size));
    p!("ascii_size", size_of::<PyASCIIObject>());
    p!("compact_size", size_of::<PyCompactUnicodeObject>());
    p!("ascii_state", offset_of!(PyASCIIObject, state));
    p!("ascii_length", offset_of!(PyASCIIObject, length));
}
