//! CPython 3.13 keeps the offsets of its own structs at the start of its runtime state
//! (`_Py_DebugOffsets`, for debuggers reading it from outside; `Include/internal/pycore_runtime.h`).
//! The offsets the table gives for a process's version are checked against the process's own
//! before its stacks are walked: a build whose layout differs (another patch release, a
//! free-threaded or otherwise configured build) is then unsupported rather than misread.

use super::offsets::Offsets;

/// The cookie `_Py_DebugOffsets` starts with.
const COOKIE: &[u8; 8] = b"xdebugpy";
/// Bytes of 3.13's `_Py_DebugOffsets` read (all of its fields are u64).
pub const SIZE: usize = 584;

/// Where in 3.13's `_Py_DebugOffsets` each offset the table holds is (offsetof against Debian
/// trixie's 3.13.5 headers), with the table's value it must equal.
fn fields(o: &Offsets) -> [(&'static str, usize, Option<u32>); 17] {
    [
        (
            "interpreter_state.threads_head",
            72,
            Some(o.interp_threads_head),
        ),
        ("thread_state.next", 168, Some(o.tstate_next)),
        ("thread_state.current_frame", 184, Some(o.tstate_frame)),
        (
            "thread_state.native_thread_id",
            200,
            o.tstate_native_thread_id,
        ),
        ("interpreter_frame.previous", 232, Some(o.frame_previous)),
        ("interpreter_frame.executable", 240, Some(o.frame_code)),
        ("interpreter_frame.instr_ptr", 248, Some(o.frame_instr)),
        ("code_object.filename", 280, Some(o.code_filename)),
        ("code_object.name", 288, Some(o.code_name)),
        ("code_object.qualname", 296, o.code_qualname),
        ("code_object.linetable", 304, Some(o.code_linetable)),
        ("code_object.firstlineno", 312, Some(o.code_firstlineno)),
        ("code_object.co_code_adaptive", 344, o.code_adaptive),
        ("bytes_object.ob_sval", 528, Some(o.bytes_sval)),
        ("unicode_object.state", 544, Some(o.ascii_state)),
        ("unicode_object.length", 552, Some(o.ascii_length)),
        ("unicode_object.asciiobject_size", 560, Some(o.ascii_size)),
    ]
}

/// Why the process's `_Py_DebugOffsets` (its first [`SIZE`] bytes in `debug`) disagree with
/// the table, if they do.
pub fn disagreement(o: &Offsets, debug: &[u8]) -> Option<String> {
    let word = |at: usize| {
        debug
            .get(at..at + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    if debug.get(..8) != Some(&COOKIE[..]) {
        return Some("its runtime state does not start with _Py_DebugOffsets".to_owned());
    }
    let version = word(8).unwrap_or_default();
    let (major, minor) = ((version >> 24) & 0xff, (version >> 16) & 0xff);
    if (major, minor) != (3, 13) {
        return Some(format!("_Py_DebugOffsets of {major}.{minor}, not 3.13"));
    }
    let free_threaded = word(16).unwrap_or_default();
    if free_threaded != 0 {
        return Some("a free-threaded build".to_owned());
    }
    fields(o).iter().find_map(|&(name, at, want)| {
        let got = word(at)?;
        (want.map(u64::from) != Some(got))
            .then(|| format!("{name} is {got} in the process, {want:?} in the table"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debug_offsets(o: &Offsets) -> Vec<u8> {
        let mut b = vec![0u8; SIZE];
        b[..8].copy_from_slice(COOKIE);
        b[8..16].copy_from_slice(&0x030d05f0u64.to_ne_bytes());
        for (_, at, v) in fields(o) {
            b[at..at + 8].copy_from_slice(&u64::from(v.unwrap()).to_ne_bytes());
        }
        b
    }

    #[test]
    fn the_table_is_checked_field_by_field() {
        let o = super::super::offsets::of(3, 13).unwrap().offsets;
        let mut b = debug_offsets(o);
        assert_eq!(disagreement(o, &b), None);
        b[184..192].copy_from_slice(&80u64.to_ne_bytes());
        assert_eq!(
            disagreement(o, &b).unwrap(),
            "thread_state.current_frame is 80 in the process, Some(72) in the table"
        );
        b[16] = 1;
        assert_eq!(disagreement(o, &b).unwrap(), "a free-threaded build");
        b[0] = b'X';
        assert!(disagreement(o, &b).unwrap().contains("does not start"));
    }
}
