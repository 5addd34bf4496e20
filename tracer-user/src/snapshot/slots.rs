//! The user side of per-CPU slots ([`tracer_common::slots`]): read through the array's mapping
//! and added to what the stats hash holds for the same key; freed for ended processes.
//!
//! The kernel takes a free slot (tgid 0) by zeroing its stats and then writing its key, tgid
//! last. Freeing here zeroes the whole slot and then, after a release fence, its tgid: a slot
//! taken again never shows the old key's counts, whatever order the stores become visible in.
//! A reader checks the key before and after reading the stats and skips a slot being taken.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    marker::PhantomData,
    sync::atomic::{Ordering, fence},
};

use aya::Ebpf;
use tracer_common::slots::{SLOT_BYTES, SLOTS_PER_CPU, SlotsConfig};

use super::Counters;
use crate::{
    kernel::maps::{self, MapAccessError, Mapped},
    loader::KernelSetup,
    processes::{OfProcess, ProcessKey},
};

/// Where a slot's stats start: after the 12-byte key and its 4 bytes of padding.
const STATS_OFFSET: usize = 16;
/// Largest slot array: 4 MiB (16,384 slots) whatever the number of possible CPUs, since the
/// mapping counts in scalp-bpf's RSS.
const MAX_SLOTS: u32 = 4 * 1024 * 1024 / SLOT_BYTES as u32;
/// Fewer slots per CPU than this, and a map has none (test sizes: `--map-entries NAME=1`).
const MIN_PER_CPU: u32 = 2;

/// Slots per CPU for a map of `entries` entries (a test-only size), or by default: the largest
/// power of two that fits `nr_cpus` times, at most [`SLOTS_PER_CPU`] and [`MAX_SLOTS`] in all; 0
/// (no slots: every event goes to the hash) below [`MIN_PER_CPU`].
fn per_cpu(test_entries: Option<u32>, nr_cpus: u32) -> u32 {
    let entries = test_entries.unwrap_or(SLOTS_PER_CPU.saturating_mul(nr_cpus).min(MAX_SLOTS));
    match entries / nr_cpus.max(1) {
        n if n < MIN_PER_CPU => 0,
        n => 1 << n.min(SLOTS_PER_CPU).ilog2(),
    }
}

/// The kernel side's settings for slots map `name`, which this sizes.
pub fn setup(k: &mut KernelSetup<'_>, name: &'static str) -> SlotsConfig {
    let n = per_cpu(k.test_entries(name), k.nr_cpus);
    k.map_entries(name, (n * k.nr_cpus).max(1));
    SlotsConfig {
        enabled: u32::from(n > 0),
        mask: n.saturating_sub(1),
    }
}

/// A slots map, mapped.
pub struct Slots<K, V> {
    mapped: Mapped,
    count: usize,
    _types: PhantomData<(K, V)>,
}

impl<K: Copy + Eq + Hash, V: Counters> Slots<K, V> {
    const WORDS: usize = size_of::<V>() / 8;

    /// Takes and maps slots map `name` (all of it: slots beyond those in use stay free).
    pub fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, MapAccessError> {
        const {
            assert!(STATS_OFFSET + size_of::<V>() <= SLOT_BYTES);
            assert!(size_of::<V>().is_multiple_of(8) && size_of::<K>() <= 12);
        };
        let (mapped, count) = Mapped::whole(maps::take(ebpf, name)?, name, SLOT_BYTES)?;
        Ok(Slots {
            mapped,
            count,
            _types: PhantomData,
        })
    }

    /// Slot `i`'s first byte.
    fn slot(&self, i: usize) -> *mut u8 {
        assert!(i < self.count && (i + 1) * SLOT_BYTES <= self.mapped.len());
        // SAFETY: in bounds, checked above.
        unsafe { self.mapped.base().add(i * SLOT_BYTES) }
    }

    /// The key of the slot at `p`, or None when it is free.
    ///
    /// # Safety
    /// `p` is a slot of the mapping (256-byte aligned).
    unsafe fn key(p: *mut u8) -> Option<K> {
        // SAFETY: the key is the slot's first field; its first word is the tgid.
        unsafe {
            if p.cast::<u32>().read_volatile() == 0 {
                return None;
            }
            fence(Ordering::Acquire);
            Some(p.cast::<K>().read_volatile())
        }
    }

    /// The stats of the slot at `p`, each 8-byte word read whole.
    ///
    /// # Safety
    /// As for [`Self::key`].
    unsafe fn stats(p: *mut u8) -> V {
        let mut v = std::mem::MaybeUninit::<V>::uninit();
        // SAFETY: V is plain counters (any bit pattern valid), WORDS × 8 bytes, 8-aligned at
        // STATS_OFFSET in the slot; every word is written before assume_init.
        unsafe {
            let from = p.add(STATS_OFFSET).cast::<u64>();
            let to = v.as_mut_ptr().cast::<u64>();
            for w in 0..Self::WORDS {
                to.add(w).write(from.add(w).read_volatile());
            }
            v.assume_init()
        }
    }

    /// Adds every taken slot's stats to `totals` (keyed like the hash).
    pub fn add_to(&self, totals: &mut HashMap<K, V>) {
        for i in 0..self.count {
            let p = self.slot(i);
            // SAFETY: reads of the mapping; the kernel may be adding to the counters meanwhile
            // (aligned words, each read whole). A slot whose key changed while it was read was
            // being taken: it holds nothing yet.
            let Some((key, stats)) = (unsafe {
                Self::key(p).and_then(|k| {
                    let stats = Self::stats(p);
                    fence(Ordering::Acquire);
                    (Self::key(p) == Some(k)).then_some((k, stats))
                })
            }) else {
                continue;
            };
            let total = totals.entry(key).or_insert_with(V::zero);
            *total = total.add(&stats);
        }
    }
}

impl<K: Copy + Eq + Hash + OfProcess, V: Counters> Slots<K, V> {
    /// Frees the slots of processes that ended (their last interval is collected): no program
    /// writes them any more, so zeroing them races with nothing; the tgid goes last.
    pub fn free(&self, ended: &[ProcessKey]) {
        if ended.is_empty() {
            return;
        }
        let ended: HashSet<&ProcessKey> = ended.iter().collect();
        for i in 0..self.count {
            let p = self.slot(i);
            // SAFETY: writes of the mapping, inside slot i.
            unsafe {
                if Self::key(p).is_some_and(|k| ended.contains(&k.process())) {
                    for w in 1..SLOT_BYTES / 4 {
                        p.cast::<u32>().add(w).write_volatile(0);
                    }
                    fence(Ordering::Release);
                    p.cast::<u32>().write_volatile(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::syscalls::{SyscallKey, SyscallSlot, SyscallStats};

    use super::*;

    #[test]
    fn a_test_size_gives_the_largest_power_of_two_per_cpu_that_fits() {
        assert_eq!(per_cpu(None, 2), SLOTS_PER_CPU);
        assert_eq!(per_cpu(Some(1), 1), 0);
        assert_eq!(per_cpu(Some(3), 2), 0);
        assert_eq!(per_cpu(Some(4), 2), 2);
        assert_eq!(per_cpu(Some(64), 6), 8);
        // Many possible CPUs: 4 MiB of slots in all.
        assert_eq!(per_cpu(None, 128), 128);
        assert_eq!(per_cpu(None, 48), 256);
    }

    #[test]
    fn the_slot_layout_is_the_one_read_here() {
        assert_eq!(std::mem::offset_of!(SyscallSlot, stats), STATS_OFFSET);
        assert_eq!(size_of::<SyscallSlot>(), SLOT_BYTES);
        assert_eq!(size_of::<SyscallKey>(), 12);
    }

    #[test]
    fn key_words_are_the_keys_bytes() {
        use tracer_common::slots::SlotKey as _;
        let k = key(7, 3, 231);
        // SAFETY: both are 12 bytes of plain integers.
        let bytes = unsafe { std::mem::transmute::<SyscallKey, [u32; 3]>(k) };
        assert_eq!(bytes, k.words());
    }

    fn slots(count: usize) -> Slots<SyscallKey, SyscallStats> {
        Slots {
            mapped: Mapped::anonymous(count * SLOT_BYTES),
            count,
            _types: PhantomData,
        }
    }

    /// Writes slot `i` as the kernel takes it.
    fn put(s: &Slots<SyscallKey, SyscallStats>, i: usize, key: SyscallKey, calls: u64) {
        let mut stats = SyscallStats::ZERO;
        stats.calls = calls;
        stats.hist[9] = calls as u32;
        let slot = SyscallSlot {
            key,
            _pad: 0,
            stats,
            _tail: [0; 48],
        };
        // SAFETY: slot i of the test mapping.
        unsafe { s.slot(i).cast::<SyscallSlot>().write(slot) };
    }

    fn key(tgid: u32, generation: u32, nr: u32) -> SyscallKey {
        SyscallKey {
            tgid,
            generation,
            nr,
        }
    }

    #[test]
    fn a_key_in_slots_of_two_cpus_and_the_hash_is_one_total() {
        let s = slots(8);
        put(&s, 1, key(7, 1, 0), 3);
        put(&s, 5, key(7, 1, 0), 4);
        put(&s, 6, key(7, 1, 1), 1);
        let mut totals = HashMap::from([(key(7, 1, 0), {
            let mut h = SyscallStats::ZERO;
            h.calls = 10;
            h
        })]);
        s.add_to(&mut totals);
        assert_eq!(totals.len(), 2);
        assert_eq!(totals[&key(7, 1, 0)].calls, 17);
        assert_eq!(totals[&key(7, 1, 0)].hist[9], 7);
        assert_eq!(totals[&key(7, 1, 1)].calls, 1);
    }

    #[test]
    fn freeing_clears_the_ended_incarnation_only_and_all_of_its_slot() {
        let s = slots(4);
        put(&s, 0, key(7, 1, 0), 3);
        put(&s, 1, key(7, 2, 0), 5);
        put(&s, 2, key(8, 1, 0), 9);
        s.free(&[key(7, 1, 0).process(), key(8, 1, 0).process()]);
        let mut totals = HashMap::new();
        s.add_to(&mut totals);
        assert_eq!(
            totals.keys().copied().collect::<Vec<_>>(),
            vec![key(7, 2, 0)]
        );
        // A freed slot is all zero: taken again, it cannot show the old counts.
        // SAFETY: slots 0 and 2 of the test mapping.
        let freed = unsafe { [0, 2].map(|i| s.slot(i).cast::<[u8; SLOT_BYTES]>().read()) };
        assert!(freed.iter().all(|b| b.iter().all(|&x| x == 0)));
    }
}
