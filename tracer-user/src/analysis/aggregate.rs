//! Aggregation per process group and key.

use std::collections::{BTreeMap, HashMap};

use arrow_array::RecordBatch;

use super::{
    AnalysisError, TableSpec,
    load::{HOST_COLUMN, RUN_COLUMN, Run, ints, lists, strings},
    percentile::quantile,
};

/// Which group each process belongs to: the service it was traced as (all its workers and
/// children together), or the process itself with `per_process`. Runs read together (a fleet)
/// group per host: `host/service`; their processes are told apart by run.
pub struct Groups {
    by_identity: HashMap<(String, i64, Option<i64>), String>,
    by_pid: HashMap<(String, i64), String>,
}

/// The run and host of each row of a batch (empty for a single run).
pub(super) fn run_host(batch: &RecordBatch) -> (Vec<String>, Vec<String>) {
    let n = batch.num_rows();
    (
        strings(batch, RUN_COLUMN).unwrap_or_else(|| vec![String::new(); n]),
        strings(batch, HOST_COLUMN).unwrap_or_else(|| vec![String::new(); n]),
    )
}

/// A group's name, under its host's when runs of several hosts are read together.
fn on_host(host: &str, group: String) -> String {
    if host.is_empty() {
        group
    } else {
        format!("{host}/{group}")
    }
}

impl Groups {
    pub fn of(run: &Run, per_process: bool) -> Groups {
        struct P {
            ppid: i64,
            name: String,
            reason: String,
            start: Option<i64>,
        }
        let mut procs: HashMap<(String, i64), P> = HashMap::new();
        let mut hosts: HashMap<String, String> = HashMap::new();
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
            let (run, host) = run_host(batch);
            for i in 0..pid.len() {
                if let Some(p) = pid[i] {
                    hosts.insert(run[i].clone(), host[i].clone());
                    procs.insert(
                        (run[i].clone(), p),
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
        let group_of = |run: &String, pid: i64| -> String {
            let key = |p: i64| (run.clone(), p);
            let mut at = pid;
            for _ in 0..64 {
                let Some(p) = procs.get(&key(at)) else { break };
                if per_process {
                    return format!("{}[{pid}]", procs[&key(pid)].name);
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
                if !procs.contains_key(&key(p.ppid)) || p.ppid == at {
                    return p.name.clone();
                }
                at = p.ppid;
            }
            procs
                .get(&key(pid))
                .map_or_else(String::new, |p| p.name.clone())
        };
        let mut by_identity = HashMap::new();
        let mut by_pid = HashMap::new();
        for ((run, pid), p) in &procs {
            let host = hosts.get(run).map_or("", String::as_str);
            let g = on_host(host, group_of(run, *pid));
            by_identity.insert((run.clone(), *pid, p.start), g.clone());
            by_pid.insert((run.clone(), *pid), g);
        }
        Groups {
            by_identity,
            by_pid,
        }
    }

    /// The group of a row's process (of `run` on `host`, both empty for a single run);
    /// processes missing from the table group by name.
    pub fn get(
        &self,
        (run, host): (&str, &str),
        pid: i64,
        start: Option<i64>,
        name: &str,
        per_process: bool,
    ) -> String {
        if let Some(g) = self
            .by_identity
            .get(&(run.to_owned(), pid, start))
            .or_else(|| self.by_pid.get(&(run.to_owned(), pid)))
        {
            return g.clone();
        }
        on_host(
            host,
            if per_process {
                format!("{name}[{pid}]")
            } else {
                name.to_owned()
            },
        )
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
    spec: &TableSpec,
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
    spec: &TableSpec,
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
    spec: &TableSpec,
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
        let (run, host) = run_host(batch);
        for i in 0..batch.num_rows() {
            let group = groups.get(
                (&run[i], &host[i]),
                pid[i].unwrap_or(0),
                start[i],
                &name[i],
                per_process,
            );
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
