//! Comparing two runs of the same job, metric by metric, for `diff`.
//!
//! Each metric is a value per (process group, key) taken from one table: a counter's sum
//! (normalized per unit of work or per second of tracing) or a latency quantile from the
//! merged histograms. A change is a regression when it is worse than the metric's relative
//! threshold *and* its absolute floor, so that noise on tiny numbers (1 → 2 calls) never alarms.

use std::collections::{BTreeMap, BTreeSet};

use tracer_common::fileio::FileOp;

use super::{
    TableSpec,
    aggregate::{Agg, Groups, aggregate},
    load::Run,
};
use crate::analysis::AnalysisError;
pub use crate::tracers::views::{Measure, Metric};
use crate::tracers::views::{metrics, table_spec};

/// A metric's effective settings after the command line's overrides.
#[derive(Clone, Debug)]
pub struct Limits {
    pub threshold: f64,
    pub floor: f64,
}

/// What the values are divided by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    Unit,
    Second,
    /// Whole runs, as they are.
    Run,
}

impl Per {
    pub fn name(self) -> &'static str {
        match self {
            Per::Unit => "unit",
            Per::Second => "second",
            Per::Run => "run",
        }
    }
}

/// The divisor of one run.
pub fn denominator(run: &Run, per: Per) -> Result<f64, AnalysisError> {
    let d = match per {
        Per::Run => Some(1.0),
        Per::Unit => run.units(),
        Per::Second => run.seconds().or_else(|| traced_seconds(run)),
    };
    match d {
        Some(d) if d > 0.0 && d.is_finite() => Ok(d),
        _ => Err(AnalysisError::Incomparable {
            what: match per {
                Per::Unit => format!(
                    "{} records no units of work (run --units N, or scalp-bpf units {} N)",
                    run.dir.display(),
                    run.dir.display()
                ),
                _ => format!("{}: cannot tell how long it traced", run.dir.display()),
            },
        }),
    }
}

/// Seconds covered by the intervals of a run whose end was not recorded (it was killed).
fn traced_seconds(run: &Run) -> Option<f64> {
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for batch in run.tables.get("syscalls")? {
        let (Some(s), Some(e)) = (
            super::load::ints(batch, "interval_start"),
            super::load::ints(batch, "interval_end"),
        ) else {
            continue;
        };
        lo = s.iter().flatten().fold(lo, |a, b| a.min(*b));
        hi = e.iter().flatten().fold(hi, |a, b| a.max(*b));
    }
    (hi > lo).then(|| (hi - lo) as f64 / 1e6)
}

/// One (group, key) of one metric in both runs.
#[derive(Clone, Debug)]
pub struct Change {
    pub metric: &'static Metric,
    pub group: String,
    pub key: Vec<String>,
    /// Raw values (sums or quantiles); None when the key is absent from that run.
    pub base: Option<f64>,
    pub head: Option<f64>,
    /// Normalized values (counters), or the quantiles again.
    pub base_rate: Option<f64>,
    pub head_rate: Option<f64>,
    /// head_rate / base_rate − 1 (None when either is missing or base is 0).
    pub change: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Worse beyond the threshold and the floor.
    Regression,
    /// A key only head has, regressing by itself (new SQL fingerprint).
    New,
    /// Better beyond the threshold and the floor.
    Improvement,
    /// A key only base has.
    Gone,
    /// Within the limits.
    Same,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::New => "new",
            Verdict::Improvement => "improvement",
            Verdict::Gone => "gone",
            Verdict::Same => "same",
        }
    }

    pub fn fails(self) -> bool {
        matches!(self, Verdict::Regression | Verdict::New)
    }
}

/// (group, key) → (raw value, samples behind it).
type Values = BTreeMap<(String, Vec<String>), (f64, i64)>;

/// The values of one metric in one run: (group, key) → (raw value, samples behind it).
fn values(
    run: &Run,
    metric: &'static Metric,
    groups: &Groups,
    exclude_io_syscalls: bool,
) -> Result<Values, AnalysisError> {
    let spec: &'static TableSpec =
        table_spec(metric.table).expect("every metric's table has a spec");
    let agg = aggregate(run, spec, groups, false)?;
    let col = |name: &str| spec.keys.iter().position(|k| *k == name);
    let key_at: Vec<usize> = metric
        .keys
        .iter()
        .map(|k| col(k).expect("metric keys are spec keys"))
        .collect();
    let filters: Vec<(usize, &[&str])> = metric
        .only
        .iter()
        .map(|(c, vals)| (col(c).expect("metric filters are spec keys"), *vals))
        .collect();
    let calls_at = spec.counters.iter().position(|c| *c == "calls");
    let mut merged: BTreeMap<(String, Vec<String>), Agg> = BTreeMap::new();
    for ((group, key), a) in &agg.rows {
        if !filters
            .iter()
            .all(|(i, vals)| vals.contains(&key[*i].as_str()))
        {
            continue;
        }
        if exclude_io_syscalls
            && metric.table == "syscalls"
            && matches!(metric.measure, Measure::Counter(_))
            && FileOp::of_syscall(&key[key_at[0]]).is_some()
        {
            continue;
        }
        let k: Vec<String> = key_at.iter().map(|i| key[*i].clone()).collect();
        let m = merged.entry((group.clone(), k)).or_insert_with(|| Agg {
            counters: vec![0; a.counters.len()],
            hist: Vec::new(),
        });
        for (x, y) in m.counters.iter_mut().zip(&a.counters) {
            *x += y;
        }
        if m.hist.len() < a.hist.len() {
            m.hist.resize(a.hist.len(), 0);
        }
        for (x, y) in m.hist.iter_mut().zip(&a.hist) {
            *x += y;
        }
    }
    let mut out = BTreeMap::new();
    for (k, a) in merged {
        let samples = calls_at.map_or(0, |i| a.counters[i]);
        match metric.measure {
            Measure::Counter(c) => {
                let i = spec
                    .counters
                    .iter()
                    .position(|x| *x == c)
                    .expect("metric counters are spec counters");
                out.insert(k, (a.counters[i] as f64, samples));
            }
            Measure::Ratio {
                numerator,
                denominator,
            } => {
                let at = |c: &str| {
                    spec.counters
                        .iter()
                        .position(|x| *x == c)
                        .expect("metric counters are spec counters")
                };
                let (n, d) = (a.counters[at(numerator)], a.counters[at(denominator)]);
                if d > 0 {
                    out.insert(k, (n as f64 / d as f64, d));
                }
            }
            Measure::Quantile { q, .. } => {
                let timed: i64 = a.hist.iter().sum();
                if let Some(v) = a.quantile(q) {
                    out.insert(k, (v, timed));
                }
            }
        }
    }
    Ok(out)
}

/// Judges one (group, key) of a metric.
pub fn judge(
    metric: &'static Metric,
    limits: &Limits,
    base: Option<(f64, i64)>,
    head: Option<(f64, i64)>,
    base_denom: f64,
    head_denom: f64,
) -> (Option<f64>, Option<f64>, Option<f64>, Verdict) {
    match metric.measure {
        Measure::Counter(_) => {
            let base_rate = base.map(|(v, _)| v / base_denom);
            let head_rate = head.map(|(v, _)| v / head_denom);
            // In the head run's own terms: what the base rate predicts for head's amount of
            // work, and what head did beyond it. Computed from the raw values (not from the
            // rates) so that equal amounts of work compare exactly: 1000 → 1100 calls is +10 %,
            // not +10.000000000000009 % (which a 10 % threshold would flag).
            let predicted = base.map_or(0.0, |(v, _)| v * (head_denom / base_denom));
            let excess = head.map_or(0.0, |(v, _)| v) - predicted;
            let relative = (predicted > 0.0).then(|| excess / predicted);
            let change = relative.filter(|_| head.is_some());
            let verdict = match (base, head) {
                (None, Some((v, _))) if metric.new_is_regression && v > 0.0 => Verdict::New,
                (Some(_), None) => Verdict::Gone,
                _ if excess >= limits.floor && relative.is_none_or(|c| c > limits.threshold) => {
                    Verdict::Regression
                }
                _ if -excess >= limits.floor && relative.is_some_and(|c| c < -limits.threshold) => {
                    Verdict::Improvement
                }
                _ => Verdict::Same,
            };
            (base_rate, head_rate, change, verdict)
        }
        Measure::Quantile { .. } | Measure::Ratio { .. } => {
            let min_samples = match metric.measure {
                Measure::Quantile { min_samples, .. } => min_samples,
                _ => 1,
            };
            let (b, h) = (base.map(|x| x.0), head.map(|x| x.0));
            let enough = base.is_some_and(|x| x.1 >= min_samples)
                && head.is_some_and(|x| x.1 >= min_samples);
            let change = match (b, h) {
                (Some(b), Some(h)) if b > 0.0 => Some((h - b) / b),
                _ => None,
            };
            let verdict = match (b, h, change) {
                (Some(b), Some(h), Some(c)) if enough => {
                    if c > limits.threshold && h - b >= limits.floor {
                        Verdict::Regression
                    } else if c < -limits.threshold / (1.0 + limits.threshold)
                        && b - h >= limits.floor
                    {
                        Verdict::Improvement
                    } else {
                        Verdict::Same
                    }
                }
                _ => Verdict::Same,
            };
            (b, h, change, verdict)
        }
    }
}

/// Every metric's changes between two runs. `limits` has one entry per metric of `metrics()`.
pub fn compare(
    base: &Run,
    head: &Run,
    per: Per,
    limits: &[Limits],
) -> Result<Vec<Change>, AnalysisError> {
    let (bd, hd) = (denominator(base, per)?, denominator(head, per)?);
    let (bg, hg) = (Groups::of(base, false), Groups::of(head, false));
    // With the file I/O table in both runs, read/write-family syscalls are counted there, by
    // what they carry (SQL statements, bytes to files, fsyncs), and not again as syscalls: a
    // patch that doubles a service's queries is one finding, not three.
    let exclude_io = base.tables.contains_key("fileio") && head.tables.contains_key("fileio");
    let mut out = Vec::new();
    for (metric, limits) in metrics().iter().copied().zip(limits) {
        if !base.tables.contains_key(metric.table) || !head.tables.contains_key(metric.table) {
            continue;
        }
        let b = values(base, metric, &bg, exclude_io)?;
        let h = values(head, metric, &hg, exclude_io)?;
        let keys: BTreeSet<&(String, Vec<String>)> = b.keys().chain(h.keys()).collect();
        for k in keys {
            let (bv, hv) = (b.get(k).copied(), h.get(k).copied());
            let (base_rate, head_rate, change, verdict) = judge(metric, limits, bv, hv, bd, hd);
            out.push(Change {
                metric,
                group: k.0.clone(),
                key: k.1.clone(),
                base: bv.map(|x| x.0),
                head: hv.map(|x| x.0),
                base_rate,
                head_rate,
                change,
                verdict,
            });
        }
    }
    Ok(out)
}

/// Checks that two runs can be compared: the same schema version and the same tables.
pub fn comparable(base: &Run, head: &Run) -> Result<(), AnalysisError> {
    let version = |r: &Run| r.meta.get("schema_version").and_then(|v| v.as_u64());
    if version(base) != version(head) {
        return Err(AnalysisError::Incomparable {
            what: format!(
                "the runs have different schema versions ({} has {}, {} has {})",
                base.dir.display(),
                version(base).map_or("none".to_owned(), |v| v.to_string()),
                head.dir.display(),
                version(head).map_or("none".to_owned(), |v| v.to_string()),
            ),
        });
    }
    let tables = |r: &Run| r.tables.keys().cloned().collect::<BTreeSet<String>>();
    let (bt, ht) = (tables(base), tables(head));
    if bt != ht {
        let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
            a.difference(b).cloned().collect::<Vec<_>>().join(", ")
        };
        return Err(AnalysisError::Incomparable {
            what: format!(
                "the runs have different tables (only in {}: [{}]; only in {}: [{}]); trace both with the same --tracers",
                base.dir.display(),
                only(&bt, &ht),
                head.dir.display(),
                only(&ht, &bt),
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(id: &str) -> &'static Metric {
        metrics().iter().copied().find(|m| m.id == id).unwrap()
    }

    fn limits(m: &Metric) -> Limits {
        Limits {
            threshold: m.threshold,
            floor: m.floor,
        }
    }

    #[test]
    fn twice_the_statements_per_unit_regress() {
        let m = metric("sql.calls");
        // 50 requests each: 50 statements vs 100.
        let (b, h, c, v) = judge(
            m,
            &limits(m),
            Some((50.0, 50)),
            Some((100.0, 100)),
            50.0,
            50.0,
        );
        assert_eq!((b, h), (Some(1.0), Some(2.0)));
        assert_eq!(c, Some(1.0));
        assert_eq!(v, Verdict::Regression);
    }

    #[test]
    fn per_unit_normalization_forgives_more_work() {
        let m = metric("sql.calls");
        // Head did twice the requests: the same statements per request.
        let (.., v) = judge(
            m,
            &limits(m),
            Some((500.0, 0)),
            Some((1000.0, 0)),
            50.0,
            100.0,
        );
        assert_eq!(v, Verdict::Same);
    }

    #[test]
    fn floors_keep_small_numbers_quiet() {
        let m = metric("syscalls.calls");
        // 1 → 2 calls is +100 %, but one call is noise.
        let (.., c, v) = judge(m, &limits(m), Some((1.0, 1)), Some((2.0, 2)), 1.0, 1.0);
        assert_eq!(c, Some(1.0));
        assert_eq!(v, Verdict::Same);
        // A syscall new in head with enough calls regresses; with few it does not.
        let (.., v) = judge(m, &limits(m), None, Some((500.0, 500)), 1.0, 1.0);
        assert_eq!(v, Verdict::Regression);
        let (.., v) = judge(m, &limits(m), None, Some((5.0, 5)), 1.0, 1.0);
        assert_eq!(v, Verdict::Same);
    }

    #[test]
    fn new_fingerprints_regress_by_themselves_and_gone_ones_are_reported() {
        let m = metric("sql.calls");
        let (.., v) = judge(m, &limits(m), None, Some((1.0, 1)), 1.0, 1.0);
        assert_eq!(v, Verdict::New);
        let (.., v) = judge(m, &limits(m), Some((300.0, 300)), None, 1.0, 1.0);
        assert_eq!(v, Verdict::Gone);
    }

    #[test]
    fn thresholds_are_relative_and_improvements_are_not_failures() {
        let m = metric("syscalls.calls");
        let tight = Limits {
            threshold: 0.05,
            floor: 1.0,
        };
        let (.., v) = judge(m, &tight, Some((1000.0, 0)), Some((1080.0, 0)), 1.0, 1.0);
        assert_eq!(v, Verdict::Regression);
        let (.., v) = judge(
            m,
            &limits(m),
            Some((1000.0, 0)),
            Some((1080.0, 0)),
            1.0,
            1.0,
        );
        assert_eq!(v, Verdict::Same);
        let (.., v) = judge(m, &limits(m), Some((1000.0, 0)), Some((500.0, 0)), 1.0, 1.0);
        assert_eq!(v, Verdict::Improvement);
        assert!(!v.fails());
    }

    /// The verdict of `metric` (default limits unless given) for raw values `base` → `head`
    /// with `samples` behind each and the runs' denominators.
    fn verdict(
        m: &'static Metric,
        l: Option<Limits>,
        base: f64,
        head: f64,
        samples: i64,
        denoms: (f64, f64),
    ) -> Verdict {
        let l = l.unwrap_or_else(|| limits(m));
        judge(
            m,
            &l,
            Some((base, samples)),
            Some((head, samples)),
            denoms.0,
            denoms.1,
        )
        .3
    }

    #[test]
    fn a_counter_exactly_at_its_threshold_is_not_a_regression() {
        // syscalls.calls: 10 %, floor 100. +10 % exactly (1000 → 1100; 0.1 is not a binary
        // fraction) is not worse than the threshold; one call more is.
        let m = metric("syscalls.calls");
        assert_eq!(verdict(m, None, 1000.0, 1100.0, 0, (1.0, 1.0)), Verdict::Same);
        assert_eq!(verdict(m, None, 1000.0, 1101.0, 0, (1.0, 1.0)), Verdict::Regression);
        // The same per unit, with units that are not powers of two.
        assert_eq!(verdict(m, None, 3000.0, 3300.0, 0, (3.0, 3.0)), Verdict::Same);
        assert_eq!(verdict(m, None, 3000.0, 3301.0, 0, (3.0, 3.0)), Verdict::Regression);
        assert_eq!(verdict(m, None, 1000.0, 2200.0, 0, (10.0, 20.0)), Verdict::Same);
        // -10 % exactly is not an improvement either; more is.
        assert_eq!(verdict(m, None, 1000.0, 900.0, 0, (1.0, 1.0)), Verdict::Same);
        assert_eq!(verdict(m, None, 1000.0, 899.0, 0, (1.0, 1.0)), Verdict::Improvement);
        // The reported change is the exact +10 %.
        let (.., change, _) = judge(m, &limits(m), Some((1000.0, 0)), Some((1100.0, 0)), 1.0, 1.0);
        assert_eq!(change, Some(0.1));
    }

    #[test]
    fn a_counter_exactly_at_its_floor_is_a_regression() {
        // sql.calls: 10 %, floor 20 (in head's terms). +100 % of 20 is 20 more: at the floor.
        let m = metric("sql.calls");
        assert_eq!(verdict(m, None, 20.0, 40.0, 0, (1.0, 1.0)), Verdict::Regression);
        assert_eq!(verdict(m, None, 19.0, 38.0, 0, (1.0, 1.0)), Verdict::Same);
        // Per unit: base 2 per unit, head 3 per unit over 20 units: 20 more than predicted.
        assert_eq!(verdict(m, None, 20.0, 60.0, 0, (10.0, 20.0)), Verdict::Regression);
        assert_eq!(verdict(m, None, 20.0, 59.0, 0, (10.0, 20.0)), Verdict::Same);
        // Something base never did (syscalls.calls, floor 100): the floor alone decides.
        let s = metric("syscalls.calls");
        let none = |head| judge(s, &limits(s), None, Some((head, 0)), 1.0, 1.0).3;
        assert_eq!(none(100.0), Verdict::Regression);
        assert_eq!(none(99.0), Verdict::Same);
        let zero = |head| judge(s, &limits(s), Some((0.0, 0)), Some((head, 0)), 1.0, 1.0).3;
        assert_eq!(zero(100.0), Verdict::Regression);
        assert_eq!(zero(99.0), Verdict::Same);
        // Improvements need the floor too: 101 fewer of 1001 is beyond both; 99 fewer of 500 is
        // -19.8 % but below the floor.
        assert_eq!(verdict(s, None, 1001.0, 900.0, 0, (1.0, 1.0)), Verdict::Improvement);
        assert_eq!(verdict(s, None, 500.0, 401.0, 0, (1.0, 1.0)), Verdict::Same);
    }

    #[test]
    fn latency_exactly_at_its_threshold_floor_and_sample_count() {
        let m = metric("sql.p97");
        let enough = crate::tracers::views::MIN_LATENCY_SAMPLES;
        // 100 %, floor 1 ms: 2 ms → 4 ms is +100 % exactly: the same; a nanosecond more regresses.
        assert_eq!(verdict(m, None, 2e6, 4e6, enough, (1.0, 1.0)), Verdict::Same);
        assert_eq!(verdict(m, None, 2e6, 4e6 + 1.0, enough, (1.0, 1.0)), Verdict::Regression);
        // 0.5 ms → 1.5 ms: +200 %, and 1 ms more: exactly the floor.
        assert_eq!(verdict(m, None, 5e5, 1.5e6, enough, (1.0, 1.0)), Verdict::Regression);
        assert_eq!(verdict(m, None, 5e5, 1.5e6 - 1.0, enough, (1.0, 1.0)), Verdict::Same);
        // Exactly the minimum of samples in both runs is enough; one fewer is not.
        assert_eq!(verdict(m, None, 2e6, 5e6, enough - 1, (1.0, 1.0)), Verdict::Same);
        // Halving is the mirror of doubling: 4 ms → 2 ms exactly is the same, below improves.
        assert_eq!(verdict(m, None, 4e6, 2e6, enough, (1.0, 1.0)), Verdict::Same);
        assert_eq!(verdict(m, None, 4e6, 2e6 - 1.0, enough, (1.0, 1.0)), Verdict::Improvement);
        // Quantiles are not normalized: the denominators do not matter.
        assert_eq!(verdict(m, None, 2e6, 4e6, enough, (1.0, 7.0)), Verdict::Same);
    }

    #[test]
    fn ratios_exactly_at_their_threshold_and_floor() {
        let m = metric("cache.miss_ratio");
        // Binary fractions, so that the boundaries are exact: 25 %, floor 1/16.
        let l = || {
            Some(Limits {
                threshold: 0.25,
                floor: 0.0625,
            })
        };
        assert_eq!(verdict(m, l(), 0.5, 0.625, 1, (1.0, 1.0)), Verdict::Same);
        assert_eq!(verdict(m, l(), 0.5, 0.6875, 1, (1.0, 1.0)), Verdict::Regression);
        // +50 % but only 1/32 more: below the floor.
        assert_eq!(verdict(m, l(), 0.0625, 0.09375, 1, (1.0, 1.0)), Verdict::Same);
        // +100 % and exactly the floor.
        assert_eq!(verdict(m, l(), 0.0625, 0.125, 1, (1.0, 1.0)), Verdict::Regression);
        // A ratio needs one sample (a denominator) in each run.
        assert_eq!(verdict(m, l(), 0.5, 1.0, 0, (1.0, 1.0)), Verdict::Same);
    }

    #[test]
    fn latency_needs_samples_a_ratio_and_an_absolute_step() {
        let m = metric("sql.p97");
        let l = limits(m);
        // 2 ms → 5 ms with 1000 samples each: regression.
        let (.., v) = judge(m, &l, Some((2e6, 1000)), Some((5e6, 1000)), 1.0, 1.0);
        assert_eq!(v, Verdict::Regression);
        // The same with 200 samples: not enough to tell.
        let (.., v) = judge(m, &l, Some((2e6, 200)), Some((5e6, 200)), 1.0, 1.0);
        assert_eq!(v, Verdict::Same);
        // 100 µs → 300 µs: 3x, but 0.2 ms is below the 1 ms floor.
        let (.., v) = judge(m, &l, Some((1e5, 1000)), Some((3e5, 1000)), 1.0, 1.0);
        assert_eq!(v, Verdict::Same);
    }
}
