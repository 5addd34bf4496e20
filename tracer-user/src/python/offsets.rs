//! The CPython struct offsets of each supported version (x86_64), in `offsets.json`: derived
//! from each version's own headers by `tests/python/offsets.c` (compiled with `Py_BUILD_CORE`,
//! printing `offsetof`), which `tests/test_python_sites.py` runs against every CPython on the
//! machine and compares with this table.

use std::{collections::HashMap, sync::LazyLock};

use serde::Deserialize;
use tracer_common::python::{PY_FRAME_WINDOW, PyProc};

/// One version's offsets (bytes).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Offsets {
    pub interp_threads_head: u32,
    pub tstate_next: u32,
    pub tstate_native_thread_id: u32,
    pub tstate_cframe: u32,
    pub cframe_current_frame: u32,
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_prev_instr: u32,
    pub code_filename: u32,
    pub code_name: u32,
    pub code_qualname: u32,
    pub code_firstlineno: u32,
    pub code_linetable: u32,
    pub code_adaptive: u32,
    pub bytes_sval: u32,
    pub var_size: u32,
    pub ascii_size: u32,
    pub compact_size: u32,
    pub ascii_state: u32,
    pub ascii_length: u32,
}

static TABLE: LazyLock<HashMap<String, Offsets>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("offsets.json")).expect("offsets.json is valid")
});

/// The offsets of CPython `major.minor`, if supported.
pub fn of(major: u64, minor: u64) -> Option<&'static Offsets> {
    TABLE.get(&format!("{major}.{minor}"))
}

/// The versions supported, sorted.
pub fn supported() -> Vec<&'static str> {
    let mut v: Vec<&str> = TABLE.keys().map(String::as_str).collect();
    v.sort_unstable();
    v
}

impl Offsets {
    /// What the kernel needs for a process whose interpreter is at `interp`; `None` when the
    /// three frame pointers do not fit in one [`PY_FRAME_WINDOW`] read.
    pub fn kernel(&self, interp: u64) -> Option<PyProc> {
        let (code, previous, instr) = (self.frame_code, self.frame_previous, self.frame_prev_instr);
        let base = code.min(previous).min(instr);
        let window = PY_FRAME_WINDOW as u32;
        if code.max(previous).max(instr) + 8 - base > window
            || [code, previous, instr].iter().any(|o| (o - base) % 8 != 0)
        {
            return None;
        }
        Some(PyProc {
            interp,
            interp_threads_head: self.interp_threads_head,
            tstate_next: self.tstate_next,
            tstate_native_thread_id: self.tstate_native_thread_id,
            tstate_frame: self.tstate_cframe,
            cframe_current_frame: self.cframe_current_frame,
            frame_window: base,
            window_code: code - base,
            window_previous: previous - base,
            window_instr: instr - base,
            _pad: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_parses_and_names_3_11() {
        assert_eq!(super::supported(), ["3.11"]);
        let o = super::of(3, 11).unwrap();
        let k = o.kernel(0x1000).unwrap();
        assert_eq!(k.interp, 0x1000);
        // f_code at 32, previous at 48, prev_instr at 56: one 32-byte read from 32.
        assert_eq!(
            (
                k.frame_window,
                k.window_code,
                k.window_previous,
                k.window_instr
            ),
            (32, 0, 16, 24)
        );
        assert!(super::of(3, 12).is_none());
    }
}
