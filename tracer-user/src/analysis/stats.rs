//! The statistics behind `diff`'s decisions: how sure a change is, from the per-interval samples
//! of each run (and the spread between base runs when there are several).
//!
//! A run's value of a metric is a ratio of sums over its intervals (statements / requests, the
//! p97 of the merged histograms). Its uncertainty comes from a moving-block bootstrap over the
//! run's intervals: intervals are drawn in circular blocks of ⌈n^⅓⌉ consecutive ones (so that a
//! burst spanning intervals, or a request whose statements end in one interval and its response
//! in the next, stays together), the value is recomputed, many times. The change is compared on
//! the log scale, `d = ln(head / base)`; its standard error is the bootstrap replicates' spread
//! (half the distance between their 15.9th and 84.1st percentiles, which an occasional empty
//! resample cannot blow up). With several base runs, the base runs' own spread beyond what their
//! bootstraps explain is run-to-run noise `τ²` (a random-effects estimate, as in meta-analysis);
//! a new run may differ from the base mean by that much again, so the variance is
//! `se² + τ²·(1 + 1/m)`, with Student's t at Welch–Satterthwaite's degrees of freedom (τ² is
//! estimated from m − 1 of them). Resampling is seeded from the metric and key: the same inputs
//! always give the same decision.

use super::percentile::quantile;

/// Bootstrap replicates per (metric, key).
pub const RESAMPLES: usize = 1000;
/// Fewer intervals than this in a run, and no interval is computed: too few samples to say
/// anything about the noise (the decision falls back to threshold and floor alone).
pub const MIN_INTERVALS: usize = 6;

/// A small, fast, seedable generator (SplitMix64, Steele, Lea and Flood 2014): the same seed gives
/// the same resamples on every machine and Rust version.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0), by multiply-shift (the bias is below 2^-32 for these n).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// A stable 64-bit hash (FNV-1a) of some strings, to seed one key's resampling.
pub fn seed_of<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// One run's per-interval samples of one metric and key (every interval of the run, in order).
#[derive(Clone, Debug)]
pub enum Cells {
    /// (numerator, denominator) per interval: the value is Σ num / Σ den.
    Ratio(Vec<(f64, f64)>),
    /// A latency histogram per interval: the value is the q-quantile of their sum.
    Hist { q: f64, hists: Vec<Vec<i64>> },
}

impl Cells {
    /// The run's intervals.
    fn len(&self) -> usize {
        match self {
            Cells::Ratio(v) => v.len(),
            Cells::Hist { hists, .. } => hists.len(),
        }
    }
}

/// Sums of resampled cells, for one or several runs pooled.
#[derive(Clone, Debug, Default)]
pub struct Pool {
    num: f64,
    den: f64,
    hist: Vec<i64>,
    q: f64,
}

impl Pool {
    pub fn add(&mut self, cells: &Cells, at: usize) {
        match cells {
            Cells::Ratio(v) => {
                self.num += v[at].0;
                self.den += v[at].1;
            }
            Cells::Hist { q, hists } => {
                self.q = *q;
                let h = &hists[at];
                if self.hist.len() < h.len() {
                    self.hist.resize(h.len(), 0);
                }
                for (a, b) in self.hist.iter_mut().zip(h) {
                    *a += b;
                }
            }
        }
    }

    pub fn add_all(&mut self, cells: &Cells) {
        for at in 0..cells.len() {
            self.add(cells, at);
        }
    }

    /// The pooled value; None when undefined (no denominator, an empty histogram).
    pub fn value(&self) -> Option<f64> {
        if self.q > 0.0 {
            return quantile(&self.hist, self.q);
        }
        (self.den > 0.0).then(|| self.num / self.den)
    }

    /// The value with half a count added, so that a run that saw none still has a logarithm.
    fn value_smoothed(&self) -> Option<f64> {
        if self.q > 0.0 {
            return self.value();
        }
        (self.den > 0.0).then(|| (self.num + 0.5) / self.den)
    }

    pub fn den(&self) -> f64 {
        self.den
    }
}

/// A change with its interval, as relative changes (0.14 is +14 %).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// Run-to-run spread measured from the base runs (log scale, as a standard deviation).
    pub between_runs: Option<f64>,
}

/// The interval of `head / base − 1` at `confidence` (e.g. 0.99), or None when the runs have too
/// few intervals, or a value is not positive (no logarithm: the caller decides on the counts).
pub fn interval(bases: &[&Cells], head: &Cells, confidence: f64, seed: u64) -> Option<Interval> {
    if bases.is_empty()
        || std::iter::once(head)
            .chain(bases.iter().copied())
            .any(|c| c.len() < MIN_INTERVALS)
    {
        return None;
    }
    let pooled = |runs: &[&Cells]| {
        let mut p = Pool::default();
        for c in runs {
            p.add_all(c);
        }
        p
    };
    let b = pooled(bases).value().filter(|v| *v > 0.0)?;
    let h = pooled(&[head]).value().filter(|v| *v > 0.0)?;
    let d = h.ln() - b.ln();
    let m = bases.len();
    let mut rng = Rng::new(seed);
    let mut diffs = Vec::with_capacity(RESAMPLES);
    let mut per_base: Vec<Vec<f64>> = vec![Vec::with_capacity(RESAMPLES); m];
    let mut idx = Vec::new();
    for _ in 0..RESAMPLES {
        let mut base_pool = Pool::default();
        for (j, cells) in bases.iter().enumerate() {
            let mut one = Pool::default();
            blocks(cells.len(), &mut rng, &mut idx);
            for &at in &idx {
                one.add(cells, at);
                base_pool.add(cells, at);
            }
            if m > 1 {
                per_base[j].push(log_or_inf(one.value()));
            }
        }
        let mut head_pool = Pool::default();
        blocks(head.len(), &mut rng, &mut idx);
        for &at in &idx {
            head_pool.add(head, at);
        }
        diffs.push(log_or_inf(head_pool.value()) - log_or_inf(base_pool.value()));
    }
    let se = robust_sd(&mut diffs);
    let mut var = se * se;
    let mut df = f64::INFINITY;
    let mut between = None;
    if m > 1 {
        // Run-to-run noise: the base runs' spread beyond their own sampling noise.
        let logs: Vec<f64> = bases
            .iter()
            .map(|c| pooled(&[c]).value_smoothed().map_or(f64::NAN, f64::ln))
            .collect();
        if logs.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mean = logs.iter().sum::<f64>() / m as f64;
        let spread = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1) as f64;
        let within = per_base
            .iter_mut()
            .map(|r| robust_sd(r).powi(2))
            .sum::<f64>()
            / m as f64;
        let tau2 = (spread - within).max(0.0);
        between = Some(tau2.sqrt());
        let run_part = tau2 * (1.0 + 1.0 / m as f64);
        if run_part > 0.0 {
            var += run_part;
            df = (m - 1) as f64 * (var / run_part).powi(2);
        }
    }
    if !var.is_finite() {
        return Some(Interval {
            low: -1.0,
            high: f64::INFINITY,
            between_runs: between,
        });
    }
    let half = t_quantile(0.5 + confidence / 2.0, df) * var.sqrt();
    Some(Interval {
        low: (d - half).exp() - 1.0,
        high: (d + half).exp() - 1.0,
        between_runs: between,
    })
}

fn log_or_inf(v: Option<f64>) -> f64 {
    match v {
        Some(v) if v > 0.0 => v.ln(),
        // A resample that saw none: as far down as it gets (the robust spread ignores tails).
        _ => f64::NEG_INFINITY,
    }
}

/// Circular blocks of ⌈n^⅓⌉ intervals, n indices in all.
fn blocks(n: usize, rng: &mut Rng, out: &mut Vec<usize>) {
    out.clear();
    let len = ((n as f64).cbrt().ceil() as usize).clamp(1, n);
    while out.len() < n {
        let start = rng.below(n);
        for k in 0..len.min(n - out.len()) {
            out.push((start + k) % n);
        }
    }
}

/// Half the distance between the 15.87th and 84.13th percentiles: the standard deviation of a
/// normal sample, and unmoved by a few infinite replicates (NaN-free input assumed; −∞ and +∞
/// sort to the ends). Infinite when a sixth of the replicates or more are.
fn robust_sd(v: &mut [f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let x = p * (v.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x.fract());
        let (a, b) = (v[i], v[(i + 1).min(v.len() - 1)]);
        if f == 0.0 || a == b {
            a
        } else {
            a + (b - a) * f
        }
    };
    let sd = (at(0.841_344_7) - at(0.158_655_3)) / 2.0;
    if sd.is_nan() { f64::INFINITY } else { sd }
}

/// The standard normal distribution function, from erfc (W. J. Cody's rational approximations
/// are overkill here; this Chebyshev fit has a relative error below 1.2e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc / 2.0
    } else {
        erfc / 2.0
    }
}

/// Student's t distribution function with `df` degrees of freedom (∞: the normal).
pub fn t_cdf(x: f64, df: f64) -> f64 {
    if !df.is_finite() || df > 1e7 {
        return normal_cdf(x);
    }
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + x * x));
    if x >= 0.0 { 1.0 - tail } else { tail }
}

/// The p-quantile (0.5 ≤ p < 1) of Student's t, by bisection on its distribution function.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1.0);
    while t_cdf(hi, df) < p && hi < 1e12 {
        hi *= 2.0;
    }
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// ln Γ(x) for x > 0 (Lanczos' approximation, g = 7, nine coefficients).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b), by its continued fraction (modified
/// Lentz), using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where it converges faster.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
    let mut f = d;
    for m in 1..300 {
        let m = m as f64;
        // Even step, then odd step, of the continued fraction's coefficients.
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
            c = 1.0 + num / c;
            if c.abs() < TINY {
                c = TINY;
            }
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * f / a
}

#[cfg(test)]
mod tests;
