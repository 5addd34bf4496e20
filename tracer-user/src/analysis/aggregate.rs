//! Aggregation per process group and key.

use std::collections::{BTreeMap, HashMap};

use super::{
    AnalysisError, TableSpec,
    load::{Run, ints, lists, strings},
    percentile::quantile,
};

/// Which group each process belongs to: the service it was traced as (all its workers and
/// children together), or the process itself with `per_process`.
pub struct Groups {
    by_identity: HashMap<(i64, Option<i64>), String>,
    by_pid: HashMap<i64, String>,
}

impl Groups {
    pub fn of(run: &Run, per_process: bool) -> Groups {
        struct P {
            ppid: i64,
            name: String,
            reason: String,
            start: Option<i64>,
        }
        let mut procs: HashMap<i64, P> = HashMap::new();
        for batch in run
            .tables
            .get("processes")
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let (Some(pid), Some(ppid), Some(name), Some(reason), Some(start)) = (
                ints(batch, "process_pid"),
                ints(batch, "process_parent_pid"),
                strings(batch, "process_name"),
                strings(batch, "process_traced_reason"),
                ints(batch, "process_start_time"),
            ) else {
                continue;
            };
            for i in 0..pid.len() {
                if let Some(p) = pid[i] {
                    procs.insert(
                        p,
                        P {
                            ppid: ppid[i].unwrap_or(0),
                            name: name[i].clone(),
                            reason: reason[i].clone(),
                            start: start[i],
                        },
                    );
                }
            }
        }
        let group_of = |pid: i64| -> String {
            let mut at = pid;
            for _ in 0..64 {
                let Some(p) = procs.get(&at) else { break };
                if per_process {
                    return format!("{}[{pid}]", procs[&pid].name);
                }
                if let Some(spec) = p.reason.strip_prefix("target:") {
                    // A name target names its group; a PID target is named after its process.
                    return if spec.bytes().all(|b| b.is_ascii_digit()) {
                        p.name.clone()
                    } else {
                        spec.to_owned()
                    };
                }
                if p.reason == "command" {
                    return p.name.clone();
                }
                if !procs.contains_key(&p.ppid) || p.ppid == at {
                    return p.name.clone();
                }
                at = p.ppid;
            }
            procs.get(&pid).map_or_else(String::new, |p| p.name.clone())
        };
        let mut by_identity = HashMap::new();
        let mut by_pid = HashMap::new();
        for (pid, p) in &procs {
            let g = group_of(*pid);
            by_identity.insert((*pid, p.start), g.clone());
            by_pid.insert(*pid, g);
        }
        Groups {
            by_identity,
            by_pid,
        }
    }

    /// The group of a row's process; processes missing from the table group by name.
    pub fn get(&self, pid: i64, start: Option<i64>, name: &str, per_process: bool) -> String {
        if let Some(g) = self
            .by_identity
            .get(&(pid, start))
            .or_else(|| self.by_pid.get(&pid))
        {
            return g.clone();
        }
        if per_process {
            format!("{name}[{pid}]")
        } else {
            name.to_owned()
        }
    }
}

/// Sums of one (group, key).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agg {
    /// In the order of the spec's counters.
    pub counters: Vec<i64>,
    /// Merged histogram (empty when the table has none).
    pub hist: Vec<i64>,
}

impl Agg {
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.hist, q)
    }
}

/// A table aggregated: (group, key values) → sums.
pub struct Aggregated {
    pub rows: BTreeMap<(String, Vec<String>), Agg>,
}

pub fn aggregate(
    run: &Run,
    spec: &'static TableSpec,
    groups: &Groups,
    per_process: bool,
) -> Result<Aggregated, AnalysisError> {
    let mut rows: BTreeMap<(String, Vec<String>), Agg> = BTreeMap::new();
    visit(
        run,
        spec,
        groups,
        per_process,
        |group, key, _, counters, hist| {
            let agg = rows.entry((group, key)).or_insert_with(|| Agg {
                counters: vec![0; spec.counters.len()],
                hist: Vec::new(),
            });
            agg.add(counters, hist);
        },
    )?;
    Ok(Aggregated { rows })
}

/// A table aggregated per interval: (group, key values) → interval start (µs) → sums.
pub type ByInterval = BTreeMap<(String, Vec<String>), BTreeMap<i64, Agg>>;

/// Like [`aggregate`], but keeping each interval apart: the samples `diff` judges noise by.
pub fn aggregate_by_interval(
    run: &Run,
    spec: &'static TableSpec,
    groups: &Groups,
) -> Result<ByInterval, AnalysisError> {
    let mut rows = ByInterval::new();
    visit(
        run,
        spec,
        groups,
        false,
        |group, key, start, counters, hist| {
            let agg = rows
                .entry((group, key))
                .or_default()
                .entry(start)
                .or_insert_with(|| Agg {
                    counters: vec![0; spec.counters.len()],
                    hist: Vec::new(),
                });
            agg.add(counters, hist);
        },
    )?;
    Ok(rows)
}

impl Agg {
    fn add(&mut self, counters: impl Iterator<Item = i64>, hist: Option<&[i64]>) {
        for (sum, v) in self.counters.iter_mut().zip(counters) {
            *sum += v;
        }
        if let Some(h) = hist {
            if self.hist.len() < h.len() {
                self.hist.resize(h.len(), 0);
            }
            for (a, b) in self.hist.iter_mut().zip(h) {
                *a += b;
            }
        }
    }

    /// Adds another sum (of the same table).
    pub fn merge(&mut self, other: &Agg) {
        self.add(other.counters.iter().copied(), Some(&other.hist));
    }
}

/// Calls `f(group, key, interval start, counters, histogram)` for every row of the table.
fn visit(
    run: &Run,
    spec: &'static TableSpec,
    groups: &Groups,
    per_process: bool,
    mut f: impl FnMut(String, Vec<String>, i64, &mut dyn Iterator<Item = i64>, Option<&[i64]>),
) -> Result<(), AnalysisError> {
    let bad = |what: &str| AnalysisError::Corrupt {
        path: run.dir.join(spec.table),
        reason: format!("missing or mistyped column {what}"),
    };
    for batch in run
        .tables
        .get(spec.table)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let pid = ints(batch, "process_pid").ok_or_else(|| bad("process_pid"))?;
        let start = ints(batch, "process_start_time").ok_or_else(|| bad("process_start_time"))?;
        let name = strings(batch, "process_name").ok_or_else(|| bad("process_name"))?;
        let interval = ints(batch, "interval_start").ok_or_else(|| bad("interval_start"))?;
        let keys: Vec<Vec<String>> = spec
            .keys
            .iter()
            .map(|k| strings(batch, k).ok_or_else(|| bad(k)))
            .collect::<Result<_, _>>()?;
        let counters: Vec<Vec<Option<i64>>> = spec
            .counters
            .iter()
            .map(|c| ints(batch, c).ok_or_else(|| bad(c)))
            .collect::<Result<_, _>>()?;
        let hist = match spec.histogram {
            Some(h) => Some(lists(batch, h).ok_or_else(|| bad(h))?),
            None => None,
        };
        for i in 0..batch.num_rows() {
            let group = groups.get(pid[i].unwrap_or(0), start[i], &name[i], per_process);
            let key: Vec<String> = keys.iter().map(|k| k[i].clone()).collect();
            let mut values = counters.iter().map(|col| col[i].unwrap_or(0));
            f(
                group,
                key,
                interval[i].unwrap_or(0),
                &mut values,
                hist.as_ref().map(|h| h[i].as_slice()),
            );
        }
    }
    Ok(())
}
