//! Counting what could not be recorded (`tracer_common::drops`).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use tracer_common::drops::{DROP_REASONS, DropReason};

#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASONS, 0);

#[inline(always)]
pub fn count(reason: DropReason) {
    if let Some(counter) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot; programs on one CPU do not run concurrently on it.
        unsafe { *counter += 1 };
    }
}
