//! Per-CPU slots for per-process stats: the hot path of a stats map keyed by process.
//!
//! A tracer counting into a per-CPU hash keyed by (process, …) pays a hash of the key, its bucket,
//! its element and this CPU's value on every event: lines the traced process's own work has
//! usually pushed out of cache by its next event. With slots, each CPU has `mask + 1` slots of 256
//! bytes in an mmapped array; a key hashes to one slot of its CPU's region and takes it when it
//! is free (its first word, the tgid, is 0), and only a key whose slot another live key holds on
//! that CPU goes to the hash. Nothing moves between slot and hash, so a key's total (its slots
//! plus its hash entry) only grows. The loader reads the slots through the mapping and frees
//! those of ended processes when it reaps their hash entries: it zeroes the slot, then its tgid,
//! so a free slot is all zero and the kernel takes it by writing its key, tgid last.

/// Bytes per slot (key and the first counters share the first cache line).
pub const SLOT_BYTES: usize = 256;
/// Default slots per CPU (a power of two): 256 KiB per CPU.
pub const SLOTS_PER_CPU: u32 = 1024;

/// The slots' part of a tracer's settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotsConfig {
    /// 0: no slots (every event goes to the hash).
    pub enabled: u32,
    /// `mask + 1` slots per CPU (a power of two), CPU `c`'s from `c × (mask + 1)`.
    pub mask: u32,
}

const _: () = assert!(core::mem::size_of::<SlotsConfig>() == 8);

crate::pod!(SlotsConfig);

/// A key slots can hold: 12 bytes whose first word is the tgid (never 0 for a traced process).
pub trait SlotKey: Copy {
    /// The key's 12 bytes as three native-endian words, as they lie in memory (padding zero):
    /// the kernel compares and writes keys word by word.
    fn words(&self) -> [u32; 3];
}

/// One slot: a key, its stats, padding to [`SLOT_BYTES`] (`TAIL` bytes, written out).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot<K, V, const TAIL: usize> {
    pub key: K,
    pub _pad: u32,
    pub stats: V,
    pub _tail: [u8; TAIL],
}

/// The slot (among `mask + 1`) of a key in its CPU's region.
#[inline(always)]
pub fn slot_of(key: &impl SlotKey, mask: u32) -> u32 {
    let [a, b, c] = key.words();
    let x = a ^ (b << 24) ^ c.wrapping_mul(0x85eb_ca77);
    (x.wrapping_mul(0x9e37_79b1) >> 16) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    struct K([u32; 3]);

    impl SlotKey for K {
        fn words(&self) -> [u32; 3] {
            self.0
        }
    }

    #[test]
    fn one_process_s_syscalls_spread_over_the_slots() {
        let mask = 1023;
        let mut seen = [false; 1024];
        for nr in 0..64 {
            seen[slot_of(&K([4242, 1, nr]), mask) as usize] = true;
        }
        // 64 keys in 1,024 slots: a few may share one, not many.
        assert!(seen.iter().filter(|&&s| s).count() >= 60);
        assert!((0..1000).all(|nr| slot_of(&K([7, 3, nr]), 7) <= 7));
    }
}
