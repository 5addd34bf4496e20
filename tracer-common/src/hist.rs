//! The log2 latency histogram both sides share.
//!
//! Bucket 0 counts durations of 0 ns; bucket `b` (1 ≤ b < BUCKETS-1) counts durations in
//! `[2^(b-1), 2^b)` ns; the last bucket counts everything from `2^(BUCKETS-2)` ns (~275 s) up.

/// Number of buckets.
pub const BUCKETS: usize = 40;

/// The bucket a duration falls in.
#[inline(always)]
pub fn bucket(ns: u64) -> usize {
    let b = (u64::BITS - ns.leading_zeros()) as usize;
    if b >= BUCKETS { BUCKETS - 1 } else { b }
}

/// Smallest duration (ns) counted in bucket `b`.
pub const fn lower_bound_ns(b: usize) -> u64 {
    if b == 0 { 0 } else { 1u64 << (b - 1) }
}

/// Smallest duration (ns) *not* counted in bucket `b`; `None` for the open-ended last bucket.
pub const fn upper_bound_ns(b: usize) -> Option<u64> {
    if b + 1 >= BUCKETS {
        None
    } else {
        Some(1u64 << b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_lands_inside_its_bucket() {
        for ns in [
            0u64,
            1,
            2,
            3,
            4,
            7,
            8,
            1000,
            1023,
            1024,
            1 << 37,
            (1 << 38) - 1,
        ] {
            let b = bucket(ns);
            assert!(lower_bound_ns(b) <= ns, "{ns} below bucket {b}");
            assert!(
                upper_bound_ns(b).is_none_or(|u| ns < u),
                "{ns} above bucket {b}"
            );
        }
    }

    #[test]
    fn huge_durations_go_to_the_last_bucket() {
        assert_eq!(bucket(1 << 38), BUCKETS - 1);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(upper_bound_ns(BUCKETS - 1), None);
    }
}
