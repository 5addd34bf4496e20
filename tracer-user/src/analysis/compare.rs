//! Comparing runs of the same job, metric by metric, for `diff`: one or several base runs against
//! a head run.
//!
//! Each metric is a value per (process group, key) taken from one table: a counter's sum divided
//! by the group's units of work (its own server-side requests, recorded units, or seconds: see
//! [`Basis`]), a ratio of two counters, or a latency quantile from the merged histograms. Every
//! run has one sample per interval, so each change comes with an interval (`stats`); a change is a
//! regression when that interval is entirely above zero *and* the change is worse than the
//! metric's relative threshold *and* its absolute floor, so that neither noise nor real but tiny
//! differences (1 → 2 calls) alarm.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    AnalysisError,
    attribution::{CallSite, RouteShare},
    load::Run,
    series::{Basis, Frame, Series},
    stats::{self, Cells, Interval, Pool},
};
use crate::tracers::views::metrics;
pub use crate::tracers::views::{Measure, Metric};

/// A metric's effective settings after the command line's overrides.
#[derive(Clone, Debug)]
pub struct Limits {
    pub threshold: f64,
    pub floor: f64,
}

/// What the values are divided by, as asked on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    /// Per group: its requests when every run has some, else units when every run records
    /// them, else seconds.
    Auto,
    Unit,
    Second,
    /// Whole runs, as they are.
    Run,
}

/// How `diff` decides.
#[derive(Clone, Debug)]
pub struct Settings {
    pub per: Per,
    /// One entry per metric of `metrics()`.
    pub limits: Vec<Limits>,
    /// Confidence of the intervals (0.99).
    pub confidence: f64,
    /// A key no base run has fails when it occurs at least this often per unit (request, unit,
    /// second).
    pub new_floor: f64,
}

impl Settings {
    /// What `diff` decides with when given no flag: per each group's own work, every
    /// metric's own threshold and floor, 99 % confidence, new keys failing from 1 % per unit.
    pub fn defaults() -> Settings {
        Settings {
            per: Per::Auto,
            limits: metrics()
                .iter()
                .map(|m| Limits {
                    threshold: m.threshold,
                    floor: m.floor,
                })
                .collect(),
            confidence: 0.99,
            new_floor: 0.01,
        }
    }
}

/// One (group, key) of one metric in the base runs and the head run.
#[derive(Clone, Debug)]
pub struct Change {
    pub metric: &'static Metric,
    pub group: String,
    pub key: Vec<String>,
    pub basis: Basis,
    /// Raw values (sums over the base runs, or pooled ratios and quantiles); None when the key
    /// is absent from every base run (from head).
    pub base: Option<f64>,
    pub head: Option<f64>,
    /// Normalized values (counters per unit), or the ratios and quantiles again.
    pub base_rate: Option<f64>,
    pub head_rate: Option<f64>,
    /// head_rate / base_rate − 1 (None when either is missing or base is 0).
    pub change: Option<f64>,
    /// The change's interval; None when it could not be computed (too few intervals, a zero).
    pub interval: Option<Interval>,
    /// The worsening in the head run's own terms: counts beyond what the base rate predicts for
    /// head's units (counters), or head − base (ratios, quantiles).
    pub excess: f64,
    /// Head's units of this key: the group's units (counters), the ratio's denominator
    /// (requests with a known cost), or the histogram's calls.
    pub head_units: f64,
    pub verdict: Verdict,
    /// Routes whose cost per request grew with it (filled in for regressions).
    pub routes: Vec<RouteShare>,
    /// Where the statements come from (`sql_statements.code_*`, when the runs have it).
    pub call_sites: Vec<CallSite>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Worse beyond noise, the threshold and the floor.
    Regression,
    /// A key no base run has, frequent enough to fail by itself (new SQL fingerprint).
    New,
    /// A key no base run has, rarer than the floor for new keys.
    NewBelowFloor,
    /// Better beyond noise, the threshold and the floor.
    Improvement,
    /// A key only base runs have.
    Gone,
    /// Within the limits, or not beyond the noise.
    Same,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::New => "new",
            Verdict::NewBelowFloor => "new below floor",
            Verdict::Improvement => "improvement",
            Verdict::Gone => "gone",
            Verdict::Same => "same",
        }
    }

    pub fn fails(self) -> bool {
        matches!(self, Verdict::Regression | Verdict::New)
    }
}

/// How one group was normalized.
#[derive(Clone, Debug)]
pub struct GroupBasis {
    pub group: String,
    pub basis: Basis,
    /// Units over all base runs, and in head.
    pub base_units: f64,
    pub head_units: f64,
}

/// Units per interval of one group in each run.
struct Units {
    basis: Basis,
    bases: Vec<Vec<f64>>,
    head: Vec<f64>,
    /// Each run's total as recorded (a count spread over the intervals does not sum back to
    /// itself exactly in floating point).
    base_total: f64,
    head_total: f64,
}

/// The outcome of [`compare`].
pub struct Comparison {
    pub changes: Vec<Change>,
    pub groups: Vec<GroupBasis>,
}

/// The runs being compared, read once for every metric.
pub struct Context<'a> {
    pub bases: Vec<Frame<'a>>,
    pub head: Frame<'a>,
    settings: &'a Settings,
    exclude_io: bool,
    units: BTreeMap<String, Units>,
}

impl<'a> Context<'a> {
    pub fn new(
        bases: &'a [Run],
        head: &'a Run,
        settings: &'a Settings,
    ) -> Result<Self, AnalysisError> {
        let base_frames: Vec<Frame> = bases.iter().map(Frame::of).collect::<Result<_, _>>()?;
        let head_frame = Frame::of(head)?;
        if settings.per == Per::Unit {
            for f in base_frames.iter().chain([&head_frame]) {
                let any = f.run.units().is_some()
                    || f.run
                        .meta
                        .get("units_by_group")
                        .and_then(|g| g.as_object())
                        .is_some_and(|g| !g.is_empty());
                if !any {
                    return Err(no_units(f.run));
                }
            }
        }
        let mut ctx = Context {
            bases: base_frames,
            head: head_frame,
            settings,
            exclude_io: false,
            units: BTreeMap::new(),
        };
        ctx.exclude_io = ctx.all_have("fileio");
        Ok(ctx)
    }

    /// Whether every run has the table.
    pub fn all_have(&self, table: &str) -> bool {
        self.bases
            .iter()
            .chain([&self.head])
            .all(|f| f.run.tables.contains_key(table))
    }

    /// How each group met so far was normalized.
    pub fn groups(&self) -> Vec<GroupBasis> {
        self.units
            .iter()
            .map(|(group, u)| GroupBasis {
                group: group.clone(),
                basis: u.basis,
                base_units: u.base_total,
                head_units: u.head_total,
            })
            .collect()
    }

    /// One metric's changes, every key of every group.
    pub fn changes(
        &mut self,
        metric: &'static Metric,
        limits: &Limits,
    ) -> Result<Vec<Change>, AnalysisError> {
        if !self.all_have(metric.table) {
            return Ok(Vec::new());
        }
        let base_series: Vec<Series> = self
            .bases
            .iter()
            .map(|f| f.series(metric, self.exclude_io))
            .collect::<Result<_, _>>()?;
        let head_series = self.head.series(metric, self.exclude_io)?;
        let keys: BTreeSet<&(String, Vec<String>)> = base_series
            .iter()
            .flat_map(|s| s.keys())
            .chain(head_series.keys())
            .collect();
        let mut changes = Vec::new();
        for k in keys {
            if !self.units.contains_key(&k.0) {
                let u = units_of(&k.0, self.settings.per, &self.bases, &self.head)?;
                self.units.insert(k.0.clone(), u);
            }
            let u = &self.units[&k.0];
            let base_cells: Vec<Cells> = base_series
                .iter()
                .zip(&u.bases)
                .zip(&self.bases)
                .map(|((s, units), f)| cells(metric, s.get(k), units, f.intervals()))
                .collect();
            let head_cells = cells(metric, head_series.get(k), &u.head, self.head.intervals());
            let seed = stats::seed_of(
                [metric.id, k.0.as_str()]
                    .into_iter()
                    .chain(k.1.iter().map(String::as_str)),
            );
            let input = Input {
                bases: base_cells.iter().collect(),
                head: &head_cells,
                base_present: base_series.iter().any(|s| s.contains_key(k)),
                head_present: head_series.contains_key(k),
                seed,
            };
            changes.push(judge(metric, limits, self.settings, u.basis, k, &input));
        }
        Ok(changes)
    }
}

/// Every metric's changes between the base runs and head, regressions annotated with the routes
/// and call sites behind them.
pub fn compare(
    bases: &[Run],
    head: &Run,
    settings: &Settings,
) -> Result<Comparison, AnalysisError> {
    let mut ctx = Context::new(bases, head, settings)?;
    let mut changes = Vec::new();
    for (metric, limits) in metrics().iter().copied().zip(&settings.limits) {
        changes.extend(ctx.changes(metric, limits)?);
    }
    super::attribution::annotate(&mut ctx, &mut changes)?;
    Ok(Comparison {
        changes,
        groups: ctx.groups(),
    })
}

fn no_units(run: &Run) -> AnalysisError {
    AnalysisError::Incomparable {
        what: format!(
            "{} records no units of work (run --units N, or scalp-bpf units {} N)",
            run.dir.display(),
            run.dir.display()
        ),
    }
}

/// Picks a group's basis and reads its units in every run.
fn units_of(group: &str, per: Per, bases: &[Frame], head: &Frame) -> Result<Units, AnalysisError> {
    let all = || bases.iter().chain([head]);
    let basis = match per {
        Per::Auto if all().all(|f| f.requests(group) > 0.0) => Basis::Request,
        Per::Auto if all().all(|f| f.units(group).is_some()) => Basis::Unit,
        Per::Auto | Per::Second => Basis::Second,
        Per::Unit => Basis::Unit,
        Per::Run => Basis::Run,
    };
    let of = |f: &Frame| {
        f.units_per_interval(group, basis)
            .ok_or_else(|| match basis {
                Basis::Unit => no_units(f.run),
                _ => AnalysisError::Incomparable {
                    what: format!("{}: cannot tell how long it traced", f.run.dir.display()),
                },
            })
    };
    Ok(Units {
        basis,
        bases: bases.iter().map(of).collect::<Result<_, _>>()?,
        head: of(head)?,
        base_total: bases.iter().map(|f| f.units_total(group, basis)).sum(),
        head_total: head.units_total(group, basis),
    })
}

/// One run's samples of one key: every interval, zeros where the key had no row.
fn cells(
    metric: &Metric,
    series: Option<&BTreeMap<usize, super::aggregate::Agg>>,
    units: &[f64],
    n: usize,
) -> Cells {
    let spec = crate::tracers::views::table_spec(metric.table).expect("metrics have specs");
    let at = |c: &str| {
        spec.counters
            .iter()
            .position(|x| *x == c)
            .expect("metric counters are spec counters")
    };
    let get = |i: usize, c: usize| {
        series
            .and_then(|s| s.get(&i))
            .map_or(0.0, |a| a.counters[c] as f64)
    };
    match metric.measure {
        Measure::Counter(c) => {
            let c = at(c);
            Cells::Ratio((0..n).map(|i| (get(i, c), units[i])).collect())
        }
        Measure::Ratio {
            numerator,
            denominator,
        } => {
            let (nu, de) = (at(numerator), at(denominator));
            Cells::Ratio((0..n).map(|i| (get(i, nu), get(i, de))).collect())
        }
        Measure::Quantile { q, .. } => Cells::Hist {
            q,
            hists: (0..n)
                .map(|i| {
                    series
                        .and_then(|s| s.get(&i))
                        .map_or_else(Vec::new, |a| a.hist.clone())
                })
                .collect(),
        },
    }
}

/// The samples of one (group, key) in every run.
pub struct Input<'a> {
    pub bases: Vec<&'a Cells>,
    pub head: &'a Cells,
    /// Whether some base run, and head, have rows for the key.
    pub base_present: bool,
    pub head_present: bool,
    pub seed: u64,
}

/// Judges one (group, key) of a metric.
pub fn judge(
    metric: &'static Metric,
    limits: &Limits,
    settings: &Settings,
    basis: Basis,
    key: &(String, Vec<String>),
    input: &Input,
) -> Change {
    let mut base_pool = Pool::default();
    for c in &input.bases {
        base_pool.add_all(c);
    }
    let mut head_pool = Pool::default();
    head_pool.add_all(input.head);
    let (b, h) = (base_pool.value(), head_pool.value());
    let raw = |pool: &Pool, cells: &[&Cells]| match metric.measure {
        Measure::Counter(_) => Some(
            cells
                .iter()
                .map(|c| match c {
                    Cells::Ratio(v) => v.iter().map(|x| x.0).sum::<f64>(),
                    Cells::Hist { .. } => 0.0,
                })
                .sum(),
        ),
        _ => pool.value(),
    };
    let mut change = Change {
        metric,
        group: key.0.clone(),
        key: key.1.clone(),
        basis,
        base: input
            .base_present
            .then(|| raw(&base_pool, &input.bases))
            .flatten(),
        head: input
            .head_present
            .then(|| raw(&head_pool, &[input.head]))
            .flatten(),
        base_rate: input.base_present.then_some(b).flatten(),
        head_rate: input.head_present.then_some(h).flatten(),
        change: None,
        interval: None,
        excess: 0.0,
        head_units: head_pool.den(),
        verdict: Verdict::Same,
        routes: Vec::new(),
        call_sites: Vec::new(),
    };
    let interval = || stats::interval(&input.bases, input.head, settings.confidence, input.seed);
    // Beyond the noise: the interval excludes no change; without an interval (too few
    // intervals), threshold and floor decide alone.
    let up = |i: &Option<Interval>| i.is_none_or(|i| i.low > 0.0);
    let down = |i: &Option<Interval>| i.is_none_or(|i| i.high < 0.0);
    match metric.measure {
        Measure::Counter(_) => {
            let (b, h) = (
                change.base_rate.unwrap_or(0.0),
                change.head_rate.unwrap_or(0.0),
            );
            // (h - b) / b, not h / b - 1: equal amounts of work compare exactly (1000 → 1100
            // calls is +10 %, not +10.000000000000009 %, which a 10 % threshold would flag).
            change.change = (b > 0.0 && change.head_rate.is_some()).then(|| (h - b) / b);
            change.excess = (h - b) * head_pool.den();
            if b > 0.0 && h > 0.0 {
                change.interval = interval();
            }
            let c = &change;
            change.verdict = match (input.base_present, input.head_present) {
                (false, true) if metric.new_is_regression && h > 0.0 => {
                    // "At least": a run-level unit count spread over the intervals sums back to
                    // itself only within rounding (1 in 200 units is 0.005 less an ulp).
                    if h >= settings.new_floor * (1.0 - 1e-9) {
                        Verdict::New
                    } else {
                        Verdict::NewBelowFloor
                    }
                }
                (true, false) => Verdict::Gone,
                _ if c.excess >= limits.floor
                    && (b == 0.0 || (h - b) / b > limits.threshold)
                    && up(&c.interval) =>
                {
                    Verdict::Regression
                }
                _ if -c.excess >= limits.floor
                    && (h - b) / b < -limits.threshold
                    && down(&c.interval) =>
                {
                    Verdict::Improvement
                }
                _ => Verdict::Same,
            };
        }
        Measure::Quantile { .. } | Measure::Ratio { .. } => {
            let min_samples = match metric.measure {
                Measure::Quantile { min_samples, .. } => min_samples as f64,
                _ => 1.0,
            };
            let samples = |p: &Pool, cells: &[&Cells]| match metric.measure {
                Measure::Quantile { .. } => cells
                    .iter()
                    .map(|c| match c {
                        Cells::Hist { hists, .. } => hists.iter().flatten().sum::<i64>() as f64,
                        Cells::Ratio(_) => 0.0,
                    })
                    .sum(),
                _ => p.den(),
            };
            let enough = samples(&base_pool, &input.bases) >= min_samples
                && samples(&head_pool, &[input.head]) >= min_samples;
            if let (Some(b), Some(h)) = (change.base_rate, change.head_rate) {
                change.excess = h - b;
                if b > 0.0 {
                    change.change = Some((h - b) / b);
                }
                if enough && b > 0.0 && h > 0.0 {
                    change.interval = interval();
                }
                let c = &change;
                change.verdict = match c.change {
                    Some(x)
                        if enough
                            && x > limits.threshold
                            && c.excess >= limits.floor
                            && up(&c.interval) =>
                    {
                        Verdict::Regression
                    }
                    Some(x)
                        if enough
                            && x < -limits.threshold / (1.0 + limits.threshold)
                            && -c.excess >= limits.floor
                            && down(&c.interval) =>
                    {
                        Verdict::Improvement
                    }
                    _ => Verdict::Same,
                };
            }
        }
    }
    change
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
mod tests;
