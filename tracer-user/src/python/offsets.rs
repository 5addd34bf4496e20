//! The CPython struct offsets of each supported version (x86_64), in `offsets.json`: derived
//! from each version's own headers by `tests/python/offsets.c` (compiled with `Py_BUILD_CORE`,
//! printing `offsetof`) where Debian carries the version (3.9 from bullseye, 3.11, 3.13 from
//! trixie), else from py-spy's bindgen output of the version's headers by
//! `tests/python/offsets_bindings.rs` (3.10, 3.12); `tests/test_python_sites.py` checks the
//! table against both. A key a version does not have is absent from its entry.

use std::{collections::HashMap, sync::LazyLock};

use serde::Deserialize;
use tracer_common::python::{PY_FRAME_WINDOW, PY_KEY_PTHREAD, PY_KEY_TID, PY_NO_OFFSET, PyProc};

/// One version's offsets (bytes).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Offsets {
    /// `threads.head` (`tstate_head` before 3.11).
    pub interp_threads_head: u32,
    /// 3.12: the code object its C-stack shim frames run (`interpreter_trampoline`).
    pub interp_trampoline: Option<u32>,
    /// 3.13: the runtime state (`runtime`), which starts with `_Py_DebugOffsets`.
    pub interp_runtime: Option<u32>,
    pub tstate_next: u32,
    /// 3.11+.
    pub tstate_native_thread_id: Option<u32>,
    /// 3.9, 3.10 (the thread's `pthread_t`).
    pub tstate_thread_id: Option<u32>,
    /// `cframe` (3.11, 3.12), `frame` (3.9, 3.10), `current_frame` (3.13).
    pub tstate_frame: u32,
    /// 3.11, 3.12.
    pub cframe_current_frame: Option<u32>,
    /// `f_code` (`f_executable` in 3.13).
    pub frame_code: u32,
    /// `previous` (`f_back` before 3.11).
    pub frame_previous: u32,
    /// `prev_instr` (3.11, 3.12), `instr_ptr` (3.13), `f_lasti` (an int, before 3.11).
    pub frame_instr: u32,
    pub code_filename: u32,
    pub code_name: u32,
    /// 3.11+ (before, the name is all there is).
    pub code_qualname: Option<u32>,
    pub code_firstlineno: u32,
    /// `co_linetable` (`co_lnotab` in 3.9).
    pub code_linetable: u32,
    /// 3.11+: where the instructions start (`co_code_adaptive`).
    pub code_adaptive: Option<u32>,
    pub bytes_sval: u32,
    pub var_size: u32,
    pub ascii_size: u32,
    pub compact_size: u32,
    pub ascii_state: u32,
    pub ascii_length: u32,
}

/// A supported version: its offsets and what its frames' positions mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub minor: u64,
    pub offsets: &'static Offsets,
}

/// How a version's code objects map a frame's position to a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// 3.9: `co_lnotab`, position = `f_lasti`, a byte offset.
    Lnotab,
    /// 3.10: `co_linetable` (PEP 626), position = `f_lasti`, in 2-byte code units.
    Pep626,
    /// 3.11+: `co_linetable` (PEP 657 locations), position = a pointer into
    /// `co_code_adaptive`.
    Locations,
}

impl Version {
    pub fn lines(&self) -> Lines {
        match self.minor {
            ..=9 => Lines::Lnotab,
            10 => Lines::Pep626,
            _ => Lines::Locations,
        }
    }
}

static TABLE: LazyLock<HashMap<String, Offsets>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("offsets.json")).expect("offsets.json is valid")
});

/// CPython `major.minor`, if supported.
pub fn of(major: u64, minor: u64) -> Option<Version> {
    TABLE
        .get(&format!("{major}.{minor}"))
        .map(|offsets| Version { minor, offsets })
}

/// The versions supported, sorted.
pub fn supported() -> Vec<&'static str> {
    let mut v: Vec<(u32, &str)> = TABLE
        .keys()
        .map(|k| {
            let minor = k.split('.').nth(1).and_then(|m| m.parse().ok());
            (minor.unwrap_or(u32::MAX), k.as_str())
        })
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, k)| k).collect()
}

impl Offsets {
    /// What the kernel needs for a process whose interpreter is at `interp`; `None` when the
    /// three frame fields do not fit in one [`PY_FRAME_WINDOW`] read or the entry is not whole.
    pub fn kernel(&self, interp: u64) -> Option<PyProc> {
        let (code, previous, instr) = (self.frame_code, self.frame_previous, self.frame_instr);
        let base = code.min(previous).min(instr);
        let len = (code.max(previous).max(instr) + 8 - base).next_multiple_of(8);
        if len > PY_FRAME_WINDOW as u32
            || [code, previous, instr].iter().any(|o| (o - base) % 8 != 0)
        {
            return None;
        }
        let (tstate_thread_id, thread_key) =
            match (self.tstate_native_thread_id, self.tstate_thread_id) {
                (Some(o), _) => (o, PY_KEY_TID),
                (None, Some(o)) => (o, PY_KEY_PTHREAD),
                (None, None) => return None,
            };
        Some(PyProc {
            interp,
            interp_threads_head: self.interp_threads_head,
            tstate_next: self.tstate_next,
            tstate_thread_id,
            tstate_frame: self.tstate_frame,
            cframe_current_frame: self.cframe_current_frame.unwrap_or(PY_NO_OFFSET),
            frame_window: base,
            frame_window_len: len,
            window_code: code - base,
            window_previous: previous - base,
            window_instr: instr - base,
            thread_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(k: &PyProc) -> (u32, u32, u32, u32, u32) {
        (
            k.frame_window,
            k.frame_window_len,
            k.window_code,
            k.window_previous,
            k.window_instr,
        )
    }

    #[test]
    fn every_version_fits_one_read_per_frame() {
        assert_eq!(supported(), ["3.9", "3.10", "3.11", "3.12", "3.13"]);
        let k = |minor| of(3, minor).unwrap().offsets.kernel(0x1000).unwrap();
        assert_eq!(k(11).interp, 0x1000);
        // 3.11: f_code at 32, previous at 48, prev_instr at 56: 32 bytes from 32.
        assert_eq!(window(&k(11)), (32, 32, 0, 16, 24));
        // 3.9: f_back at 24, f_code at 32, f_lasti at 104: 88 bytes from 24.
        assert_eq!(window(&k(9)), (24, 88, 8, 0, 80));
        assert_eq!(window(&k(10)), (24, 80, 8, 0, 72));
        // 3.12, 3.13: the code object at 0, previous at 8, the instruction pointer at 56.
        assert_eq!(window(&k(12)), (0, 64, 0, 8, 56));
        assert_eq!(window(&k(13)), (0, 64, 0, 8, 56));
        assert_eq!(k(13).cframe_current_frame, PY_NO_OFFSET);
        assert_eq!(k(9).cframe_current_frame, PY_NO_OFFSET);
        assert_eq!(k(12).cframe_current_frame, 0);
        assert_eq!(
            (k(9).thread_key, k(10).thread_key),
            (PY_KEY_PTHREAD, PY_KEY_PTHREAD)
        );
        assert_eq!(
            (k(11).thread_key, k(13).thread_key),
            (PY_KEY_TID, PY_KEY_TID)
        );
        assert_eq!(of(3, 9).unwrap().lines(), Lines::Lnotab);
        assert_eq!(of(3, 10).unwrap().lines(), Lines::Pep626);
        assert_eq!(of(3, 13).unwrap().lines(), Lines::Locations);
        assert!(of(3, 14).is_none());
    }
}
