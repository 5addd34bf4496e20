//! "Is the current task traced?" — the first question every program asks, and the only one an
//! untraced process ever pays for: one helper call and one inlined array load.

use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array};
use tracer_common::process::{ProcessDrop, TGIDS_PER_ELEMENT, TRACED_FLAG, generation};

use crate::{
    kernel::setting,
    process::{PROCESS_CONFIG, dropped},
};

/// One byte per tgid (see `tracer_common::process`). The loader sizes it to pid_max and maps it
/// into its memory (BPF_F_MMAPABLE) so that it can set one byte without rewriting the other seven,
/// which a fork on another CPU may be writing at the same moment.
#[map]
static TRACED: Array<[u8; 8]> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The generation of `tgid` if it is traced.
#[inline(always)]
pub fn traced_generation(tgid: u32) -> Option<u32> {
    let element = TRACED.get(tgid / TGIDS_PER_ELEMENT)?;
    let byte = element[(tgid % TGIDS_PER_ELEMENT) as usize];
    if byte & TRACED_FLAG == 0 {
        None
    } else {
        Some(u32::from(generation(byte)))
    }
}

/// The current `TRACED` byte of `tgid` (0 when never traced or out of range).
#[inline(always)]
pub fn traced_byte(tgid: u32) -> u8 {
    match TRACED.get(tgid / TGIDS_PER_ELEMENT) {
        Some(element) => element[(tgid % TGIDS_PER_ELEMENT) as usize],
        None => 0,
    }
}

/// Sets the `TRACED` byte of `tgid`. Returns false (and counts a drop) when `tgid` is beyond the
/// map, which only happens if pid_max was raised after scalp-bpf started.
#[inline(always)]
pub fn set_traced_byte(tgid: u32, byte: u8) -> bool {
    let index = tgid / TGIDS_PER_ELEMENT;
    if index >= setting!(PROCESS_CONFIG.traced_elements) {
        dropped(ProcessDrop::PidOutOfRange);
        return false;
    }
    match TRACED.get_ptr_mut(index) {
        Some(element) => {
            // SAFETY: the element is valid map memory; a racing writer of another byte in the same
            // element writes only its own byte.
            unsafe { (*element)[(tgid % TGIDS_PER_ELEMENT) as usize] = byte };
            true
        }
        None => false,
    }
}
