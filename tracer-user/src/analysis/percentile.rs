//! Percentiles from log2 histograms (tracer_common::hist).
//!
//! The rule, documented in the README so that anyone can recompute it: with the buckets' counts
//! `c[b]` and total `n`, the q-quantile's rank is `r = q * n`; find the first bucket where the
//! running count reaches `r`; interpolate linearly inside it between its lower bound `lo` and its
//! upper bound `hi` (for the open last bucket, `hi = 2 * lo`):
//! `lo + (hi - lo) * (r - before) / c[b]`, where `before` counts the calls in earlier buckets.

use tracer_common::hist::{lower_bound_ns, upper_bound_ns};

/// The q-quantile (0 < q ≤ 1) of a histogram, in ns; None when it is empty.
pub fn quantile(counts: &[i64], q: f64) -> Option<f64> {
    let total: i64 = counts.iter().map(|c| (*c).max(0)).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut before = 0f64;
    for (b, &c) in counts.iter().enumerate() {
        let c = c.max(0) as f64;
        if c > 0.0 && before + c >= rank {
            let lo = lower_bound_ns(b) as f64;
            let hi = upper_bound_ns(b).map_or(2.0 * lo.max(1.0), |h| h as f64);
            return Some(lo + (hi - lo) * ((rank - before) / c).clamp(0.0, 1.0));
        }
        before += c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_bucket_interpolates_inside_it() {
        let mut h = vec![0i64; 40];
        h[11] = 100; // [1024, 2048) ns
        assert_eq!(quantile(&h, 0.5), Some(1024.0 + 512.0));
        assert_eq!(quantile(&h, 1.0), Some(2048.0));
    }

    #[test]
    fn ranks_cross_buckets() {
        let mut h = vec![0i64; 40];
        h[1] = 50; // [1, 2)
        h[10] = 50; // [512, 1024)
        assert_eq!(quantile(&h, 0.5), Some(2.0));
        assert_eq!(quantile(&h, 0.99), Some(512.0 + 512.0 * (49.0 / 50.0)));
        assert_eq!(quantile(&[0; 40], 0.5), None);
    }
}
