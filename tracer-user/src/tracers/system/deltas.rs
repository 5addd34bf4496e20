//! Turning the kernel's cumulative counters (since boot, or since a device was created) into
//! per-interval deltas. Unlike the kernel maps (`crate::snapshot`), these counters are the
//! kernel's own and behave in three ways, so each counter says which it is ([`Kind`]); and the
//! things they count (CPUs, disks, interfaces) come and go between reads ([`Series`]).

use std::collections::BTreeMap;

/// How one counter's values become a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (64 bits); a smaller value means it started again from 0 (a device or
    /// interface of the same name was re-created): the delta is the new value.
    Monotonic,
    /// Printed as 32 bits (`/proc/diskstats`' busy time, `%u` of ms): a smaller value wrapped
    /// around 2^32.
    Wraps32,
    /// May step back (per-CPU idle and iowait times, man 5 proc): the signed difference, so that
    /// an interval's deltas always add up to the counters' own difference.
    Signed,
}

impl Kind {
    /// The delta from `before` to `now`.
    pub fn delta(self, before: u64, now: u64) -> i64 {
        let wide = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self {
            Kind::Monotonic if now >= before => wide(now - before),
            Kind::Monotonic => wide(now),
            Kind::Wraps32 => i64::from((now as u32).wrapping_sub(before as u32)),
            Kind::Signed => now.wrapping_sub(before) as i64,
        }
    }

    /// Whether `now` after `before` means the counter was reset.
    fn reset(self, before: u64, now: u64) -> bool {
        self == Kind::Monotonic && now < before
    }
}

/// What the counters of a thing seen for the first time hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appears {
    /// Everything it did: a block device or interface that was not there at the last read was
    /// created since, and its counters started from 0 — all of it happened in this interval.
    FromZero,
    /// Its history before (a CPU brought online keeps its times since boot): no row until the
    /// next read.
    WithHistory,
}

/// The counters of a set of things (CPUs, disks, interfaces) from one read to the next.
pub struct Series<K, const N: usize> {
    kinds: [Kind; N],
    appears: Appears,
    /// The last read; `None` before the first one and after a failed one (the next read is a
    /// new baseline: a delta across a gap would be charged to one interval).
    previous: Option<BTreeMap<K, [u64; N]>>,
}

impl<K: Ord + Clone, const N: usize> Series<K, N> {
    pub fn new(kinds: [Kind; N], appears: Appears) -> Self {
        Series {
            kinds,
            appears,
            previous: None,
        }
    }

    /// The deltas since the last read of every thing present now (things gone since are
    /// forgotten: what they did after the last read is unknowable). `None` for a baseline.
    pub fn advance(&mut self, now: BTreeMap<K, [u64; N]>) -> Option<Vec<(K, [i64; N])>> {
        let previous = self.previous.replace(now)?;
        let now = self.previous.as_ref()?;
        let mut rows = Vec::with_capacity(now.len());
        for (key, values) in now {
            let before = match previous.get(key) {
                Some(before) => before,
                None if self.appears == Appears::FromZero => &[0; N],
                None => continue,
            };
            // A monotonic counter that went back means the thing was re-created: all of its
            // counters started again (a 32-bit one would otherwise pass for a wrap).
            let reset = (0..N).any(|i| self.kinds[i].reset(before[i], values[i]));
            let from = if reset { &[0; N] } else { before };
            let mut delta = [0i64; N];
            for i in 0..N {
                delta[i] = self.kinds[i].delta(from[i], values[i]);
            }
            rows.push((key.clone(), delta));
        }
        Some(rows)
    }

    /// After a failed read: the next read is a baseline.
    pub fn forget(&mut self) {
        self.previous = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Kind = Kind::Monotonic;

    fn read<const N: usize>(
        entries: &[(&'static str, [u64; N])],
    ) -> BTreeMap<&'static str, [u64; N]> {
        entries.iter().copied().collect()
    }

    #[test]
    fn deltas_of_each_kind() {
        assert_eq!(M.delta(10, 25), 15);
        // Re-created: counted from 0.
        assert_eq!(M.delta(1_000, 7), 7);
        // diskstats' busy ms wraps at 2^32.
        assert_eq!(Kind::Wraps32.delta(u64::from(u32::MAX) - 5, 10), 16);
        assert_eq!(Kind::Wraps32.delta(100, 150), 50);
        // iowait stepping back is kept, so deltas add up to the difference.
        assert_eq!(Kind::Signed.delta(500, 498), -2);
        assert_eq!(Kind::Signed.delta(500, 530), 30);
    }

    #[test]
    fn the_first_read_is_a_baseline_and_deltas_add_up() {
        let mut s = Series::new([M, Kind::Wraps32], Appears::FromZero);
        assert_eq!(s.advance(read(&[("vda", [100, 4_294_967_000])])), None);
        let a = s.advance(read(&[("vda", [150, 4_294_967_290])])).unwrap();
        let b = s.advance(read(&[("vda", [180, 200])])).unwrap();
        assert_eq!(a, vec![("vda", [50, 290])]);
        assert_eq!(b, vec![("vda", [30, 206])]);
        // Over the three reads: 80 requests, 496 ms busy across the wrap.
        assert_eq!(a[0].1[0] + b[0].1[0], 80);
        assert_eq!(a[0].1[1] + b[0].1[1], 496);
    }

    #[test]
    fn devices_appearing_count_from_zero_and_disappearing_are_forgotten() {
        let mut s = Series::new([M, M], Appears::FromZero);
        s.advance(read(&[("vda", [10, 10])]));
        // loop3 created between the reads: everything it did is this interval's.
        let rows = s
            .advance(read(&[("vda", [12, 10]), ("loop3", [5, 7])]))
            .unwrap();
        assert_eq!(rows, vec![("loop3", [5, 7]), ("vda", [2, 0])]);
        // loop3 gone: no row; back again later, it counts from 0 once more.
        let rows = s.advance(read(&[("vda", [12, 11])])).unwrap();
        assert_eq!(rows, vec![("vda", [0, 1])]);
        let rows = s
            .advance(read(&[("vda", [12, 11]), ("loop3", [1, 0])]))
            .unwrap();
        assert_eq!(rows, vec![("loop3", [1, 0]), ("vda", [0, 0])]);
    }

    #[test]
    fn a_recreated_device_resets_every_counter_even_32_bit_ones() {
        let mut s = Series::new([M, Kind::Wraps32], Appears::FromZero);
        s.advance(read(&[("dm-0", [5_000, 90_000])]));
        // Removed and created again under the same name between two reads.
        let rows = s.advance(read(&[("dm-0", [3, 40])])).unwrap();
        assert_eq!(rows, vec![("dm-0", [3, 40])]);
    }

    #[test]
    fn cpus_coming_online_wait_for_a_second_read() {
        let mut s = Series::new([Kind::Signed], Appears::WithHistory);
        s.advance(read(&[("0", [1_000])]));
        let rows = s.advance(read(&[("0", [1_100]), ("1", [99_999])])).unwrap();
        assert_eq!(rows, vec![("0", [100])]);
        let rows = s
            .advance(read(&[("0", [1_200]), ("1", [100_099])]))
            .unwrap();
        assert_eq!(rows, vec![("0", [100]), ("1", [100])]);
    }

    #[test]
    fn a_failed_read_makes_the_next_one_a_baseline() {
        let mut s = Series::new([M], Appears::FromZero);
        s.advance(read(&[("lo", [10])]));
        s.forget();
        assert_eq!(s.advance(read(&[("lo", [50])])), None);
        assert_eq!(s.advance(read(&[("lo", [60])])), Some(vec![("lo", [10])]));
    }
}
