//! Per-CPU slots in front of a per-process stats hash ([`tracer_common::slots`]): the slot a key
//! hashes to in this CPU's region, taken for it when free.

use aya_ebpf::{helpers::bpf_get_smp_processor_id, maps::Array};
use tracer_common::slots::{Slot, SlotKey, SlotsConfig, slot_of};

/// This CPU's slot of `key`'s stats, taken for it if free; None when slots are off or another key
/// holds it (the caller counts into its hash then).
#[inline(always)]
pub fn stats<K: SlotKey, V: Copy, const TAIL: usize>(
    map: &Array<Slot<K, V, TAIL>>,
    config: SlotsConfig,
    key: &K,
) -> Option<*mut V> {
    if config.enabled == 0 {
        return None;
    }
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let s = map.get_ptr_mut(cpu.wrapping_mul(config.mask + 1) + slot_of(key, config.mask))?;
    // SAFETY: valid map memory; only programs on this CPU write this CPU's slots (they do not
    // nest), and user space only frees slots of ended processes, whose keys no program writes.
    unsafe {
        let held = (*s).key.words();
        let want = key.words();
        if held != want {
            if held[0] != 0 {
                return None;
            }
            // A free slot is all zero (fresh map memory, or freed by user space, which zeroes it
            // before its tgid): writing the key takes it, the tgid last.
            let key_words = core::ptr::addr_of_mut!((*s).key) as *mut u32;
            key_words.add(2).write_volatile(want[2]);
            key_words.add(1).write_volatile(want[1]);
            key_words.write_volatile(want[0]);
        }
        Some(core::ptr::addr_of_mut!((*s).stats))
    }
}
