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
}

impl<K: Pod + Eq + Hash + Copy, V: Pod + Counters> StatsMap<K, V> {
    /// Takes the map `name` out of the loaded object.
    pub fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, MapAccessError> {
        let map = maps::take_as(ebpf, name)?;
        Ok(StatsMap {
            name,
            map,
            deltas: Deltas::default(),
        })
    }

    /// Every key with its value summed over CPUs.
    pub fn totals(&self) -> Result<Vec<(K, V)>, MapAccessError> {
        sum_per_cpu(&self.map).map_err(|source| self.error(source))
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
        self.remove(|k| ended.contains(&k.process()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
