//! Interval snapshots: kernel maps hold ever-growing per-CPU counters; each interval the loader
//! sums the CPUs and subtracts what it saw last time. Nothing is reset in the kernel, so no
//! increment can fall between a read and a reset.

use std::{collections::HashMap, hash::Hash};

use aya::{
    Pod,
    maps::{MapData, MapError, PerCpuHashMap},
};

/// Counters that can be summed over CPUs and differenced over time.
pub trait Counters: Copy {
    /// All zero.
    fn zero() -> Self;
    /// `self + other` (wrapping).
    fn add(&self, other: &Self) -> Self;
    /// `self - earlier` (wrapping: exact as long as one interval adds less than the type holds).
    fn minus(&self, earlier: &Self) -> Self;
    fn is_zero(&self) -> bool;
}

impl Counters for u64 {
    fn zero() -> Self {
        0
    }
    fn add(&self, other: &Self) -> Self {
        self.wrapping_add(*other)
    }
    fn minus(&self, earlier: &Self) -> Self {
        self.wrapping_sub(*earlier)
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
pub fn sum_per_cpu<K: Pod + Eq + Hash, V: Pod + Counters>(
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

/// Deletes every key for which `doomed` is true.
pub fn remove_keys<K: Pod + Eq + Hash, V: Pod>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    doomed: impl Fn(&K) -> bool,
) -> Result<usize, MapError> {
    let keys: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| doomed(k))
        .collect();
    for key in &keys {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(keys.len())
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
