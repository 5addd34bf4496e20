//! The user side of `SYSCALL_SLOTS`: per CPU, slots that the kernel fills with the stats of the
//! first (process, syscall) pair to hash there, read here through the array's mapping and added
//! to what `SYSCALL_STATS` holds for the same pair. A pair's total is its slots (one per CPU at
//! most) plus its hash entry; both only grow while the process lives, so the sum does too, and
//! nothing ever moves between them. The slots of ended processes are freed here, after their
//! last interval is collected; the kernel zeroes a slot when it takes it.

use std::collections::HashMap;

use aya::Ebpf;
use tracer_common::syscalls::{
    SLOTS_PER_CPU, SYSCALL_SLOTS, SyscallKey, SyscallSlot, SyscallStats,
};

use crate::{
    kernel::maps::{self, MapAccessError, Mapped},
    processes::{OfProcess as _, ProcessKey},
    snapshot::Counters as _,
};

/// Slots per CPU for a map of `entries` entries (a test-only size, or the default): the largest
/// power of two that fits `nr_cpus` times; 0 (no slots: every call goes to the hash) when the
/// map has fewer entries than CPUs.
pub fn per_cpu(test_entries: Option<u32>, nr_cpus: u32) -> u32 {
    let Some(entries) = test_entries else {
        return SLOTS_PER_CPU;
    };
    match entries / nr_cpus.max(1) {
        0 => 0,
        n => 1 << n.ilog2(),
    }
}

/// The map's entries for `per_cpu` slots per CPU (an array needs at least one).
pub fn entries(per_cpu: u32, nr_cpus: u32) -> u32 {
    (per_cpu * nr_cpus).max(1)
}

/// `SYSCALL_SLOTS`, mapped.
pub struct Slots {
    mapped: Option<Mapped>,
    count: usize,
}

impl Slots {
    /// Takes and maps the array of `per_cpu × nr_cpus` slots (none mapped when `per_cpu` is 0).
    pub fn new(ebpf: &mut Ebpf, per_cpu: u32, nr_cpus: u32) -> Result<Slots, MapAccessError> {
        let map = maps::take(ebpf, SYSCALL_SLOTS)?;
        let count = (per_cpu * nr_cpus) as usize;
        let mapped = if count == 0 {
            None
        } else {
            Some(Mapped::new(
                map,
                SYSCALL_SLOTS,
                count * size_of::<SyscallSlot>(),
            )?)
        };
        Ok(Slots { mapped, count })
    }

    fn slot(&self, i: usize) -> Option<*mut SyscallSlot> {
        let mapped = self.mapped.as_ref()?;
        // SAFETY: i < count, and the mapping holds `count` slots (256-byte aligned, as the
        // array lays out its 256-byte values).
        (i < self.count).then(|| unsafe { mapped.base().cast::<SyscallSlot>().add(i) })
    }

    /// Adds every taken slot's stats to `totals` (keyed by pair).
    pub fn add_to(&self, totals: &mut HashMap<SyscallKey, SyscallStats>) {
        for i in 0..self.count {
            let Some(slot) = self.slot(i) else {
                break;
            };
            // SAFETY: reads of the mapping; the kernel may be adding to the counters meanwhile
            // (aligned words, each read whole), and a key changes only when a free slot is taken.
            let (key, stats) = unsafe {
                let key = std::ptr::addr_of!((*slot).key).read_volatile();
                if key.tgid == 0 {
                    continue;
                }
                (key, std::ptr::addr_of!((*slot).stats).read_volatile())
            };
            add(totals, key, &stats);
        }
    }

    /// Frees the slots of processes that ended (their last interval is collected).
    pub fn free(&self, ended: &[ProcessKey]) {
        for i in 0..self.count {
            let Some(slot) = self.slot(i) else {
                break;
            };
            // SAFETY: as in `add_to`; no program writes the slot of an ended process, so this
            // store races with nothing but a later claim, which waits for it.
            unsafe {
                let key = std::ptr::addr_of!((*slot).key).read_volatile();
                if key.tgid != 0 && ended.contains(&key.process()) {
                    std::ptr::addr_of_mut!((*slot).key.tgid).write_volatile(0);
                }
            }
        }
    }
}

/// Adds `stats` to the pair's total.
fn add(totals: &mut HashMap<SyscallKey, SyscallStats>, key: SyscallKey, stats: &SyscallStats) {
    let total = totals.entry(key).or_insert(SyscallStats::ZERO);
    *total = total.add(stats);
}

/// The hash's totals with the slots' added: one row per pair.
pub fn merge(
    hash: Vec<(SyscallKey, SyscallStats)>,
    slots: &Slots,
) -> Vec<(SyscallKey, SyscallStats)> {
    let mut totals: HashMap<SyscallKey, SyscallStats> = HashMap::with_capacity(hash.len());
    for (key, stats) in hash {
        add(&mut totals, key, &stats);
    }
    slots.add_to(&mut totals);
    totals.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_size_gives_the_largest_power_of_two_per_cpu_that_fits() {
        assert_eq!(per_cpu(None, 2), SLOTS_PER_CPU);
        assert_eq!(per_cpu(Some(1), 2), 0);
        assert_eq!(per_cpu(Some(2), 2), 1);
        assert_eq!(per_cpu(Some(7), 2), 2);
        assert_eq!(per_cpu(Some(64), 6), 8);
        assert_eq!(entries(0, 4), 1);
        assert_eq!(entries(8, 6), 48);
    }

    #[test]
    fn a_pair_in_the_hash_and_in_slots_of_two_cpus_is_one_row_with_their_sum() {
        let key = SyscallKey {
            tgid: 7,
            generation: 1,
            nr: 0,
        };
        let other = SyscallKey { nr: 1, ..key };
        let stats = |calls, bucket: usize| {
            let mut s = SyscallStats::ZERO;
            s.calls = calls;
            s.timed_calls = calls;
            s.hist[bucket] = calls as u32;
            s
        };
        // Two slots by hand: the map stands in for nothing here, so a Slots without a mapping
        // and its rows added directly.
        let mut totals = HashMap::new();
        add(&mut totals, key, &stats(3, 5));
        add(&mut totals, other, &stats(1, 2));
        add(&mut totals, key, &stats(4, 5));
        let none = Slots {
            mapped: None,
            count: 0,
        };
        none.add_to(&mut totals);
        let got = merge(totals.into_iter().collect(), &none);
        let mut got: Vec<_> = got
            .into_iter()
            .map(|(k, s)| (k.nr, s.calls, s.hist[5]))
            .collect();
        got.sort();
        assert_eq!(got, vec![(0, 7, 7), (1, 1, 0)]);
    }
}
