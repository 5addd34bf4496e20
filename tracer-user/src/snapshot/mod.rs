//! Interval snapshots: kernel maps hold ever-growing per-CPU counters; each interval the loader
//! sums the CPUs and subtracts what it saw last time. Nothing is reset in the kernel, so no
//! increment can fall between a read and a reset.

use std::{collections::HashMap, hash::Hash};

use aya::{
    Ebpf, Pod,
    maps::{MapData, MapError, PerCpuHashMap},
};

use crate::{
    kernel::maps::{self, MapAccessError},
    processes::{OfProcess, ProcessKey},
};

pub mod slots;

/// How two counter sets combine: summing CPUs, or differencing totals over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
}

impl Op {
    /// `a ± b`, wrapping (a difference stays exact as long as one interval adds less than the
    /// type holds).
    pub fn u64(self, a: u64, b: u64) -> u64 {
        match self {
            Op::Add => a.wrapping_add(b),
            Op::Sub => a.wrapping_sub(b),
        }
    }

    /// A histogram's buckets, each `a ± b`.
    pub fn hist<const N: usize>(self, mut a: [u32; N], b: &[u32; N]) -> [u32; N] {
        for (x, y) in a.iter_mut().zip(b) {
            *x = match self {
                Op::Add => x.wrapping_add(*y),
                Op::Sub => x.wrapping_sub(*y),
            };
        }
        a
    }
}

/// Counters that can be summed over CPUs and differenced over time.
pub trait Counters: Copy {
    /// All zero.
    fn zero() -> Self;
    /// Every counter of `self` combined with the same counter of `other`.
    fn combine(&self, other: &Self, op: Op) -> Self;
    fn is_zero(&self) -> bool;

    /// `self + other`.
    fn add(&self, other: &Self) -> Self {
        self.combine(other, Op::Add)
    }

    /// `self - earlier`.
    fn minus(&self, earlier: &Self) -> Self {
        self.combine(earlier, Op::Sub)
    }
}

impl Counters for u64 {
    fn zero() -> Self {
        0
    }
    fn combine(&self, other: &Self, op: Op) -> Self {
        op.u64(*self, *other)
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

/// Last totals per key, to turn totals into deltas.
pub struct Deltas<K, V> {
    previous: HashMap<K, V>,
}

impl<K: Eq + Hash + Copy, V: Counters> Default for Deltas<K, V> {
    fn default() -> Self {
        Deltas {
            previous: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Copy, V: Counters> Deltas<K, V> {
    /// The change since the last call for `key`, or None when nothing changed.
    pub fn delta(&mut self, key: K, total: V) -> Option<V> {
        let previous = self.previous.insert(key, total).unwrap_or_else(V::zero);
        let delta = total.minus(&previous);
        (!delta.is_zero()).then_some(delta)
    }

    /// Forgets keys (their map entries were deleted).
    pub fn forget(&mut self, keep: impl Fn(&K) -> bool) {
        self.previous.retain(|k, _| keep(k));
    }
}

/// Every key of a per-CPU hash with its value summed over CPUs.
fn sum_per_cpu<K: Pod + Eq + Hash, V: Pod + Counters>(
    map: &PerCpuHashMap<MapData, K, V>,
) -> Result<Vec<(K, V)>, MapError> {
    let mut rows = Vec::new();
    for item in map.iter() {
        match item {
            Ok((key, values)) => {
                let total = values.iter().fold(V::zero(), |acc, v| acc.add(v));
                rows.push((key, total));
            }
            // A key deleted between get_next_key and lookup: nothing to read.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}

/// A kernel per-CPU stats map and the totals last read from it: every interval's deltas, and
/// the removal of keys (ended processes, idle files) from both.
pub struct StatsMap<K: Pod, V: Pod> {
    name: &'static str,
    map: PerCpuHashMap<MapData, K, V>,
    deltas: Deltas<K, V>,
    /// The per-CPU slots in front of the hash, if it has them.
    slots: Option<slots::Slots<K, V>>,
}

impl<K: Pod + Eq + Hash + Copy, V: Pod + Counters> StatsMap<K, V> {
    /// Takes the map `name` out of the loaded object.
    pub fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, MapAccessError> {
        let map = maps::take_as(ebpf, name)?;
        Ok(StatsMap {
            name,
            map,
            deltas: Deltas::default(),
            slots: None,
        })
    }

    /// Takes the map `name` and the slots map `slots` in front of it
    /// ([`tracer_common::slots`]).
    pub fn take_with_slots(
        ebpf: &mut Ebpf,
        name: &'static str,
        slots: &'static str,
    ) -> Result<Self, MapAccessError> {
        let mut map = Self::take(ebpf, name)?;
        map.slots = Some(slots::Slots::take(ebpf, slots)?);
        Ok(map)
    }

    /// Every key with its value summed over CPUs (and over its slots, if any).
    pub fn totals(&self) -> Result<Vec<(K, V)>, MapAccessError> {
        let hash = sum_per_cpu(&self.map).map_err(|source| self.error(source))?;
        let Some(slots) = &self.slots else {
            return Ok(hash);
        };
        let mut totals: HashMap<K, V> = hash.into_iter().collect();
        slots.add_to(&mut totals);
        Ok(totals.into_iter().collect())
    }

    /// The change of `key` since the last interval, or None when nothing changed.
    pub fn delta(&mut self, key: K, total: V) -> Option<V> {
        self.deltas.delta(key, total)
    }

    /// Deletes every key for which `doomed` is true, in the kernel and here.
    pub fn remove(&mut self, doomed: impl Fn(&K) -> bool) -> Result<(), MapAccessError> {
        let keys: Vec<K> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| doomed(k))
            .collect();
        for key in &keys {
            match self.map.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(self.error(e)),
            }
        }
        self.deltas.forget(|k| !doomed(k));
        Ok(())
    }

    fn error(&self, source: MapError) -> MapAccessError {
        MapAccessError::Map {
            map: self.name,
            source,
        }
    }
}

impl<K: Pod + Eq + Hash + Copy + OfProcess, V: Pod + Counters> StatsMap<K, V> {
    /// Deletes the entries of processes that ended (their last interval is collected).
    pub fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), MapAccessError> {
        if let Some(slots) = &self.slots {
            slots.free(ended);
        }
        self.remove(|k| ended.contains(&k.process()))
    }
}

#[cfg(test)]
mod tests {
    use aya::maps::PerCpuValues;
    use tracer_common::{
        blockio::BlockStats,
        fileio::{FILE_NAME_BYTES, FileIoStats, FileStats},
        hist::BUCKETS,
        syscalls::{SyscallKey, SyscallStats},
    };

    use super::*;

    /// A histogram with `base + i` in bucket i.
    fn hist(base: u32) -> [u32; BUCKETS] {
        std::array::from_fn(|i| base + i as u32)
    }

    #[test]
    fn u64_counters_add_and_subtract_wrapping() {
        assert_eq!(5u64.add(&7), 12);
        assert_eq!(12u64.minus(&7), 5);
        assert_eq!(u64::MAX.add(&2), 1);
        assert_eq!(1u64.minus(&2), u64::MAX);
        assert!(0u64.is_zero() && !1u64.is_zero());
        assert_eq!(u64::zero(), 0);
    }

    #[test]
    fn histograms_combine_bucket_by_bucket_and_wrap() {
        let a = [1u32, u32::MAX, 5];
        let b = [2u32, 3, 5];
        assert_eq!(Op::Add.hist(a, &b), [3, 2, 10]);
        assert_eq!(Op::Sub.hist(b, &a), [1, 4, 0]);
    }

    #[test]
    fn syscall_stats_combine_every_field() {
        let a = SyscallStats {
            calls: 100,
            errors: 7,
            timed_calls: 40,
            duration_ns: 9_000,
            hist: hist(10),
        };
        let b = SyscallStats {
            calls: 1,
            errors: 2,
            timed_calls: 3,
            duration_ns: 4,
            hist: hist(1),
        };
        let sum = a.add(&b);
        assert_eq!(
            (sum.calls, sum.errors, sum.timed_calls, sum.duration_ns),
            (101, 9, 43, 9_004)
        );
        assert_eq!(sum.hist, std::array::from_fn(|i| 11 + 2 * i as u32));
        assert_eq!(sum.minus(&b), a);
        assert_eq!(a.minus(&a), SyscallStats::zero());
        assert!(SyscallStats::zero().is_zero());
        // Calls without timing (counts only), or timing without a new call (a call that was
        // already under way): either is a change.
        assert!(
            !SyscallStats {
                calls: 1,
                ..SyscallStats::ZERO
            }
            .is_zero()
        );
        assert!(
            !SyscallStats {
                timed_calls: 1,
                ..SyscallStats::ZERO
            }
            .is_zero()
        );
    }

    #[test]
    fn fileio_stats_combine_every_field() {
        let a = FileIoStats {
            calls: 10,
            errors: 1,
            bytes: 4096,
            timed_calls: 9,
            duration_ns: 777,
            hist: hist(3),
        };
        let b = FileIoStats {
            calls: 5,
            errors: 2,
            bytes: 100,
            timed_calls: 4,
            duration_ns: 23,
            hist: hist(0),
        };
        let sum = a.add(&b);
        assert_eq!(
            (
                sum.calls,
                sum.errors,
                sum.bytes,
                sum.timed_calls,
                sum.duration_ns
            ),
            (15, 3, 4196, 13, 800)
        );
        assert_eq!(sum.hist, std::array::from_fn(|i| 3 + 2 * i as u32));
        assert_eq!(sum.minus(&a), b);
        assert!(a.minus(&a).is_zero() && !b.is_zero());
    }

    #[test]
    fn block_stats_combine_every_field() {
        let a = BlockStats {
            requests: 8,
            bytes: 32_768,
            errors: 1,
            queue_ns: 500,
            device_ns: 80_000,
            queue_hist: hist(2),
            device_hist: hist(20),
        };
        let b = BlockStats {
            requests: 2,
            bytes: 8_192,
            errors: 0,
            queue_ns: 50,
            device_ns: 20_000,
            queue_hist: hist(1),
            device_hist: hist(0),
        };
        let sum = a.add(&b);
        assert_eq!(
            (
                sum.requests,
                sum.bytes,
                sum.errors,
                sum.queue_ns,
                sum.device_ns
            ),
            (10, 40_960, 1, 550, 100_000)
        );
        assert_eq!(sum.queue_hist, std::array::from_fn(|i| 3 + 2 * i as u32));
        assert_eq!(sum.device_hist, std::array::from_fn(|i| 20 + 2 * i as u32));
        assert_eq!(sum.minus(&b), a);
        assert!(sum.minus(&sum).is_zero() && !a.is_zero());
    }

    fn file(name: &str, fd: u32, reads: u64, writes: u64) -> FileStats {
        let mut n = [0u8; FILE_NAME_BYTES];
        n[..name.len()].copy_from_slice(name.as_bytes());
        FileStats {
            read_bytes: reads * 10,
            write_bytes: writes * 100,
            reads,
            writes,
            fd,
            _pad: 0,
            name: n,
        }
    }

    #[test]
    fn file_stats_sum_counters_and_keep_a_name_and_a_used_fd() {
        // Over CPUs: the name found first, the fd of a CPU that used the file.
        let cpu0 = file("a.dat", 5, 2, 3);
        let idle = file("", 0, 0, 0);
        let sum = FileStats::zero().add(&cpu0).add(&idle);
        assert_eq!(
            (sum.reads, sum.writes, sum.read_bytes, sum.write_bytes),
            (2, 3, 20, 300)
        );
        assert_eq!((sum.fd, &sum.name[..5]), (5, &b"a.dat"[..]));
        let cpu1 = file("a.dat", 9, 1, 0);
        assert_eq!(sum.add(&cpu1).fd, 9);
        // Over time: the newer total's fd and name.
        let later = file("a.dat", 7, 4, 4);
        let delta = later.minus(&cpu0);
        assert_eq!((delta.reads, delta.writes, delta.fd), (2, 1, 7));
        assert!(later.minus(&later).is_zero() && !delta.is_zero());
    }

    /// A real per-CPU hash map in the kernel, as the tracers' stats maps are. Creating one needs
    /// root or CAP_BPF, as every test of `cargo xtask test` has.
    fn kernel_map(max_entries: u32) -> StatsMap<SyscallKey, u64> {
        let map = PerCpuHashMap::<MapData, SyscallKey, u64>::create(max_entries, 0).unwrap_or_else(|e| {
            panic!("creating a per-CPU hash map needs root or CAP_BPF (cargo xtask test runs as root): {e}")
        });
        StatsMap {
            name: "TEST_STATS",
            map,
            deltas: Deltas::default(),
            slots: None,
        }
    }

    fn cpus() -> usize {
        aya::util::nr_cpus().expect("possible CPUs")
    }

    /// Sets `key` to `first + cpu` on every CPU; returns the sum over CPUs.
    fn set(m: &mut StatsMap<SyscallKey, u64>, key: SyscallKey, first: u64) -> u64 {
        let values: Vec<u64> = (0..cpus() as u64).map(|c| first + c).collect();
        let total = values.iter().sum();
        m.map
            .insert(
                key,
                PerCpuValues::try_from(values).expect("one value per CPU"),
                0,
            )
            .expect("insert");
        total
    }

    fn key(tgid: u32, generation: u32, nr: u32) -> SyscallKey {
        SyscallKey {
            tgid,
            generation,
            nr,
        }
    }

    fn sorted(mut v: Vec<(SyscallKey, u64)>) -> Vec<(SyscallKey, u64)> {
        v.sort();
        v
    }

    #[test]
    fn stats_map_totals_sum_every_cpu_and_deltas_follow_the_intervals() {
        let mut m = kernel_map(16);
        assert_eq!(m.totals().expect("read"), vec![]);
        let (a, b) = (key(100, 1, 39), key(100, 1, 0));
        let ta = set(&mut m, a, 10);
        let tb = set(&mut m, b, 1);
        assert_eq!(
            sorted(m.totals().expect("read")),
            sorted(vec![(a, ta), (b, tb)])
        );
        // First interval: everything is new.
        assert_eq!(m.delta(a, ta), Some(ta));
        assert_eq!(m.delta(b, tb), Some(tb));
        // Second: `a` grew on every CPU, `b` did not move.
        let ta2 = set(&mut m, a, 15);
        assert_eq!(ta2 - ta, 5 * cpus() as u64);
        let totals = m.totals().expect("read");
        let now = |k| {
            totals
                .iter()
                .find(|(x, _)| *x == k)
                .map(|(_, v)| *v)
                .expect("key")
        };
        assert_eq!(m.delta(a, now(a)), Some(ta2 - ta));
        assert_eq!(m.delta(b, now(b)), None);
    }

    #[test]
    fn reaping_deletes_an_ended_process_in_the_kernel_and_forgets_its_totals() {
        let mut m = kernel_map(16);
        let ended = ProcessKey {
            tgid: 200,
            generation: 3,
        };
        let (gone1, gone2) = (key(200, 3, 1), key(200, 3, 2));
        // The same PID's next incarnation and another process stay.
        let (reused, other) = (key(200, 4, 1), key(201, 3, 1));
        for k in [gone1, gone2, reused, other] {
            let t = set(&mut m, k, 50);
            assert_eq!(m.delta(k, t), Some(t));
        }
        m.reap(&[ended]).expect("reap");
        let mut left: Vec<SyscallKey> = m
            .totals()
            .expect("read")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        left.sort();
        assert_eq!(left, vec![reused, other]);
        // Had the kernel recreated the key, it would count from zero, not from the old total.
        let t = set(&mut m, gone1, 1);
        assert_eq!(m.delta(gone1, t), Some(t));
        // The survivors keep theirs.
        let t = set(&mut m, other, 50);
        assert_eq!(m.delta(other, t), None);
    }

    #[test]
    fn remove_takes_any_predicate_and_a_key_gone_already_is_no_error() {
        let mut m = kernel_map(16);
        for nr in 0..6 {
            set(&mut m, key(300, 1, nr), 1);
        }
        m.remove(|k| k.nr % 2 == 0).expect("remove");
        let mut left: Vec<u32> = m
            .totals()
            .expect("read")
            .into_iter()
            .map(|(k, _)| k.nr)
            .collect();
        left.sort();
        assert_eq!(left, vec![1, 3, 5]);
        m.remove(|k| k.nr % 2 == 0).expect("nothing left to remove");
        m.remove(|_| true).expect("remove all");
        assert_eq!(m.totals().expect("read"), vec![]);
    }

    #[test]
    fn deltas_report_only_changes() {
        let mut d: Deltas<u32, u64> = Deltas::default();
        assert_eq!(d.delta(1, 10), Some(10));
        assert_eq!(d.delta(1, 10), None);
        assert_eq!(d.delta(1, 15), Some(5));
        assert_eq!(d.delta(2, 0), None);
    }

    #[test]
    fn deltas_survive_wrapping_counters() {
        let mut d: Deltas<u32, u64> = Deltas::default();
        d.delta(1, u64::MAX - 1);
        assert_eq!(d.delta(1, 3), Some(5));
    }

    #[test]
    fn forgotten_keys_start_from_zero() {
        let mut d: Deltas<u32, u64> = Deltas::default();
        d.delta(1, 10);
        d.forget(|k| *k != 1);
        assert_eq!(d.delta(1, 4), Some(4));
    }
}
