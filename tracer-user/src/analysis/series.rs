//! A run as `diff` sees it: its intervals, each group's units of work per interval, and each
//! metric's per-interval samples per (group, key).

use std::collections::{BTreeMap, HashMap};

use tracer_common::fileio::FileOp;

use super::{
    AnalysisError, TableSpec,
    aggregate::{Agg, Groups, aggregate_by_interval},
    load::{Run, ints},
};
use crate::tracers::views::{Measure, Metric, table_spec};

/// What one group's counts are divided by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Basis {
    /// The group's own server-side HTTP/uwsgi requests (`http_requests`).
    Request,
    /// Units of work recorded for the run or for the group (`run --units`, `scalp-bpf units`).
    Unit,
    /// Seconds of tracing.
    Second,
    /// Not normalized: whole runs.
    Run,
}

impl Basis {
    pub fn name(self) -> &'static str {
        match self {
            Basis::Request => "request",
            Basis::Unit => "unit",
            Basis::Second => "second",
            Basis::Run => "run",
        }
    }
}

/// One run read for `diff`.
pub struct Frame<'a> {
    pub run: &'a Run,
    pub groups: Groups,
    /// Interval starts (µs), sorted; the samples are per interval.
    pub starts: Vec<i64>,
    /// Each interval's length, in seconds.
    pub lengths: Vec<f64>,
    index: HashMap<i64, usize>,
    /// Group → server-side requests answered per interval.
    requests: BTreeMap<String, Vec<f64>>,
}

/// Per (group, key): the metric's sums per interval (sparse: intervals without rows are absent).
pub type Series = BTreeMap<(String, Vec<String>), BTreeMap<usize, Agg>>;

impl<'a> Frame<'a> {
    pub fn of(run: &'a Run) -> Result<Frame<'a>, AnalysisError> {
        let groups = Groups::of(run, false);
        let mut ends: BTreeMap<i64, i64> = BTreeMap::new();
        for batches in run.tables.values() {
            for batch in batches {
                let (Some(s), Some(e)) =
                    (ints(batch, "interval_start"), ints(batch, "interval_end"))
                else {
                    continue;
                };
                for (s, e) in s.iter().zip(&e) {
                    if let (Some(s), Some(e)) = (s, e) {
                        let end = ends.entry(*s).or_insert(*e);
                        *end = (*end).max(*e);
                    }
                }
            }
        }
        let starts: Vec<i64> = ends.keys().copied().collect();
        let lengths = ends
            .iter()
            .map(|(s, e)| ((e - s) as f64 / 1e6).max(0.0))
            .collect();
        let index = starts.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let mut frame = Frame {
            run,
            groups,
            starts,
            lengths,
            index,
            requests: BTreeMap::new(),
        };
        if let Some(spec) = table_spec("http_requests") {
            let dir = spec.keys.iter().position(|k| *k == "direction");
            let calls = spec.counters.iter().position(|c| *c == "calls");
            if let (Some(dir), Some(calls)) = (dir, calls) {
                let n = frame.starts.len();
                for ((group, key), by) in aggregate_by_interval(run, spec, &frame.groups)? {
                    if key[dir] != "server" {
                        continue;
                    }
                    let per = frame.requests.entry(group).or_insert_with(|| vec![0.0; n]);
                    for (start, agg) in by {
                        if let Some(&i) = frame.index.get(&start) {
                            per[i] += agg.counters[calls] as f64;
                        }
                    }
                }
            }
        }
        Ok(frame)
    }

    pub fn intervals(&self) -> usize {
        self.starts.len()
    }

    /// Server-side requests the group answered in the run.
    pub fn requests(&self, group: &str) -> f64 {
        self.requests.get(group).map_or(0.0, |r| r.iter().sum())
    }

    /// Units of work recorded for the group (`units RUN N --group G`), else for the run.
    pub fn units(&self, group: &str) -> Option<f64> {
        self.run
            .meta
            .get("units_by_group")
            .and_then(|g| g.get(group))
            .and_then(|v| v.as_f64())
            .or_else(|| self.run.units())
            .filter(|u| *u > 0.0 && u.is_finite())
    }

    /// Seconds the run traced.
    pub fn seconds(&self) -> Option<f64> {
        self.run
            .seconds()
            .or_else(|| {
                let total: f64 = self.lengths.iter().sum();
                (total > 0.0).then_some(total)
            })
            .filter(|s| *s > 0.0 && s.is_finite())
    }

    /// The group's units over the whole run on a basis, as recorded (0 when it has none).
    pub fn units_total(&self, group: &str, basis: Basis) -> f64 {
        match basis {
            Basis::Request => self.requests.get(group).map_or(0.0, |r| r.iter().sum()),
            Basis::Unit => self.units(group).unwrap_or(0.0),
            Basis::Second => self.seconds().unwrap_or(0.0),
            Basis::Run => 1.0,
        }
    }

    /// The group's units per interval on a basis (a run-level count is spread over the
    /// intervals by their length); None when the run does not have that basis.
    pub fn units_per_interval(&self, group: &str, basis: Basis) -> Option<Vec<f64>> {
        let spread = |total: f64| {
            let all: f64 = self.lengths.iter().sum();
            let n = self.lengths.len().max(1) as f64;
            self.lengths
                .iter()
                .map(|l| {
                    if all > 0.0 {
                        total * l / all
                    } else {
                        total / n
                    }
                })
                .collect()
        };
        match basis {
            Basis::Request => self
                .requests
                .get(group)
                .filter(|r| r.iter().sum::<f64>() > 0.0)
                .cloned(),
            Basis::Unit => self.units(group).map(spread),
            Basis::Second => self.seconds().map(spread),
            Basis::Run => Some(spread(1.0)),
        }
    }

    /// One metric's sums per (group, metric key) and interval.
    pub fn series(
        &self,
        metric: &'static Metric,
        exclude_io_syscalls: bool,
    ) -> Result<Series, AnalysisError> {
        let spec: &'static TableSpec =
            table_spec(metric.table).expect("every metric's table has a spec");
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
        let exceptions: Vec<(usize, &[&str])> = metric
            .except
            .iter()
            .map(|(c, vals)| (col(c).expect("metric filters are spec keys"), *vals))
            .collect();
        let mut out = Series::new();
        for ((group, key), by) in aggregate_by_interval(self.run, spec, &self.groups)? {
            if !filters
                .iter()
                .all(|(i, vals)| vals.contains(&key[*i].as_str()))
                || exceptions
                    .iter()
                    .any(|(i, vals)| vals.contains(&key[*i].as_str()))
            {
                continue;
            }
            // With the file I/O table, read/write-family syscalls are counted there, by what
            // they carry (SQL statements, bytes to files, fsyncs), and not again as syscalls: a
            // patch that doubles a service's queries is one finding, not three.
            if exclude_io_syscalls
                && metric.table == "syscalls"
                && matches!(metric.measure, Measure::Counter(_))
                && FileOp::of_syscall(&key[key_at[0]]).is_some()
            {
                continue;
            }
            let k: Vec<String> = key_at.iter().map(|i| key[*i].clone()).collect();
            let per = out.entry((group, k)).or_default();
            for (start, agg) in by {
                let Some(&i) = self.index.get(&start) else {
                    continue;
                };
                per.entry(i)
                    .and_modify(|a: &mut Agg| a.merge(&agg))
                    .or_insert(agg);
            }
        }
        Ok(out)
    }
}
