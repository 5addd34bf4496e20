//! The tables, histograms and top talkers of each service: every table `summary` shows, with
//! StackTach's columns (N, min, max, avg, p50, p97, p99) beside its counters. Everything comes
//! from `analysis` — the reader and the aggregation `summary` uses — so the page's numbers are
//! `summary`'s.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use tracer_common::hist::{lower_bound_ns, upper_bound_ns};

use super::Services;
use crate::analysis::{
    AnalysisError, TableSpec,
    aggregate::{Agg, Aggregated, Groups, aggregate},
    load::{HOST_COLUMN, RUN_COLUMN, Run, ints, strings},
};

/// Rows per service and table in the page; the page says how many there were in all.
pub const MAX_ROWS: usize = 200;
/// Top talkers per service and kind.
pub const TALKERS: usize = 15;
/// Quantiles of the tables, named as `summary --format json` names them.
pub const QUANTILES: [(&str, f64); 3] = [("p50_ns", 0.50), ("p97_ns", 0.97), ("p99_ns", 0.99)];

/// The count a table's N is: calls, or block requests.
pub fn n_column(spec: &TableSpec) -> &'static str {
    ["calls", "requests"]
        .into_iter()
        .find(|c| spec.counters.contains(c))
        .unwrap_or(spec.default_sort)
}

/// The sum of the durations its histogram counts: `duration_histogram` → `duration_ns_sum`,
/// `device_histogram` → `device_ns_sum`.
pub fn duration_column(spec: &TableSpec) -> Option<&'static str> {
    let stem = spec.histogram?.strip_suffix("_histogram")?;
    spec.counters
        .iter()
        .copied()
        .find(|c| c.strip_suffix("_ns_sum") == Some(stem))
}

/// The lowest and highest durations the histogram allows: the lower bound of its first
/// non-empty bucket and the upper bound of its last (twice its lower bound for the open last
/// bucket, as for the percentiles). The true minimum and maximum lie within these.
pub fn bounds(hist: &[i64]) -> Option<(f64, f64)> {
    let first = hist.iter().position(|c| *c > 0)?;
    let last = hist.iter().rposition(|c| *c > 0)?;
    let lo = lower_bound_ns(first) as f64;
    let hi = upper_bound_ns(last).map_or(2.0 * lower_bound_ns(last).max(1) as f64, |h| h as f64);
    Some((lo, hi))
}

fn position(spec: &TableSpec, column: &str) -> Option<usize> {
    spec.counters.iter().position(|c| *c == column)
}

/// One row: its key, its counters, and N, min, max, avg, p50, p97, p99.
fn row(spec: &TableSpec, key: &[String], a: &Agg) -> Value {
    let counters: Map<String, Value> = spec
        .counters
        .iter()
        .zip(&a.counters)
        .map(|(c, v)| ((*c).to_owned(), json!(v)))
        .collect();
    let n = position(spec, n_column(spec)).map_or(0, |i| a.counters[i]);
    let (min, max) = bounds(&a.hist).unzip();
    // The duration sum is exact, or an unbiased estimate of the total when latency was
    // sampled: divided by every call, it is the mean of every call.
    let avg = duration_column(spec)
        .and_then(|d| position(spec, d))
        .filter(|_| n > 0 && min.is_some())
        .map(|i| a.counters[i] as f64 / n as f64);
    let mut obj = json!({
        "key": key,
        "counters": counters,
        "n": n,
        "min_ns": min,
        "max_ns": max,
        "avg_ns": avg,
    });
    for (name, q) in QUANTILES {
        obj[name] = json!(a.quantile(q));
    }
    obj
}

/// The value `summary` orders rows by.
fn sort_value(spec: &TableSpec, a: &Agg) -> i64 {
    position(spec, spec.default_sort).map_or(0, |i| a.counters[i])
}

/// Adds every service's tables and latency histograms, and returns the aggregates by table
/// for the top talkers.
pub fn tables(
    run: &Run,
    groups: &Groups,
    services: &mut Services,
) -> Result<HashMap<&'static str, Aggregated>, AnalysisError> {
    let mut all = HashMap::new();
    for spec in crate::tracers::views::table_specs() {
        if !run.tables.contains_key(spec.table) {
            continue;
        }
        let agg = aggregate(run, spec, groups, false)?;
        let mut by_group: BTreeMap<&str, Vec<(&Vec<String>, &Agg)>> = BTreeMap::new();
        for ((group, key), a) in &agg.rows {
            by_group.entry(group).or_default().push((key, a));
        }
        for (group, mut rows) in by_group {
            rows.sort_by(|a, b| {
                sort_value(spec, b.1)
                    .cmp(&sort_value(spec, a.1))
                    .then_with(|| a.0.cmp(b.0))
            });
            let service = services.entry(group.to_owned()).or_default();
            let mut merged = Agg::default();
            for (_, a) in &rows {
                merged.merge(a);
            }
            let total = rows.len();
            service.tables.push(json!({
                "table": spec.table,
                "title": spec.title,
                "keys": spec.keys,
                "counters": spec.counters,
                "n": n_column(spec),
                "histogram": spec.histogram.is_some(),
                "total_rows": total,
                "rows": rows.iter().take(MAX_ROWS).map(|(k, a)| row(spec, k, a)).collect::<Vec<_>>(),
            }));
            if let Some((first, last)) = merged
                .hist
                .iter()
                .position(|c| *c > 0)
                .zip(merged.hist.iter().rposition(|c| *c > 0))
            {
                service.histograms.push(json!({
                    "table": spec.table,
                    "title": spec.title,
                    "what": if spec.histogram == Some("device_histogram") { "device time" } else { "latency" },
                    "lo_ns": (first..=last).map(lower_bound_ns).collect::<Vec<_>>(),
                    "counts": &merged.hist[first..=last],
                }));
            }
        }
        all.insert(spec.table, agg);
    }
    Ok(all)
}

/// A group's rows of an aggregated table.
fn rows_of<'a>(
    agg: Option<&'a Aggregated>,
    group: &'a str,
) -> impl Iterator<Item = (&'a Vec<String>, &'a Agg)> + 'a {
    agg.into_iter().flat_map(move |a| {
        a.rows
            .range((group.to_owned(), Vec::new())..)
            .take_while(move |((g, _), _)| g == group)
            .map(|((_, k), a)| (k, a))
    })
}

fn counter(table: &str, agg: &Agg, column: &str) -> i64 {
    crate::tracers::views::table_spec(table)
        .and_then(|s| position(s, column))
        .map_or(0, |i| agg.counters[i])
}

fn key_at(table: &str, key: &[String], column: &str) -> String {
    crate::tracers::views::table_spec(table)
        .and_then(|s| s.keys.iter().position(|k| *k == column))
        .map_or_else(String::new, |i| key[i].clone())
}

/// Per process (as `summary --per-process` names them): its sums of `counters` of `table`,
/// over the rows whose `filter` column (if any) has the value given. Aggregated with only the
/// columns needed — no key, no histogram — so that a run of thousands of processes costs a
/// few counters per process.
fn per_process(
    run: &Run,
    table: &'static str,
    counters: &'static [&'static str],
    filter: Option<(&'static [&'static str], &str)>,
) -> Result<HashMap<String, Vec<i64>>, AnalysisError> {
    let Some(full) = crate::tracers::views::table_spec(table) else {
        return Ok(HashMap::new());
    };
    if !run.tables.contains_key(table) {
        return Ok(HashMap::new());
    }
    let spec = TableSpec {
        table,
        title: full.title,
        keys: filter.map_or(&[], |(k, _)| k),
        counters,
        histogram: None,
        default_sort: counters[0],
        rank: full.rank,
    };
    let agg = aggregate(run, &spec, &Groups::of(run, true), true)?;
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for ((label, key), a) in &agg.rows {
        if filter.is_some_and(|(_, v)| key.first().map(String::as_str) != Some(v)) {
            continue;
        }
        let sums = out
            .entry(label.clone())
            .or_insert_with(|| vec![0; counters.len()]);
        for (s, v) in sums.iter_mut().zip(&a.counters) {
            *s += v;
        }
    }
    Ok(out)
}

/// Each traced process's per-process label and its service.
fn services_of_processes(run: &Run) -> Vec<(String, String)> {
    let by_service = Groups::of(run, false);
    let by_process = Groups::of(run, true);
    let mut out = Vec::new();
    for batch in run
        .tables
        .get("processes")
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (Some(pid), Some(start), Some(name)) = (
            ints(batch, "process_pid"),
            ints(batch, "process_start_time"),
            strings(batch, "process_name"),
        ) else {
            continue;
        };
        let n = batch.num_rows();
        let runs = strings(batch, RUN_COLUMN).unwrap_or_else(|| vec![String::new(); n]);
        let hosts = strings(batch, HOST_COLUMN).unwrap_or_else(|| vec![String::new(); n]);
        for i in 0..n {
            let at = (runs[i].as_str(), hosts[i].as_str());
            let pid = pid[i].unwrap_or(0);
            out.push((
                by_process.get(at, pid, start[i], &name[i], true),
                by_service.get(at, pid, start[i], &name[i], false),
            ));
        }
    }
    out
}

/// The top talkers of each service: its processes by syscalls (with their file and block
/// bytes), its files by bytes, its devices by bytes.
pub fn talkers(
    run: &Run,
    aggregated: &HashMap<&'static str, Aggregated>,
    services: &mut Services,
) -> Result<(), AnalysisError> {
    let syscalls = per_process(run, "syscalls", &["calls", "errors"], None)?;
    let files = per_process(run, "fileio", &["bytes"], Some((&["file_kind"], "file")))?;
    let block = per_process(run, "blockio", &["bytes"], None)?;
    let mut processes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (label, service) in services_of_processes(run) {
        if !seen.insert(label.clone()) {
            continue;
        }
        let get = |m: &HashMap<String, Vec<i64>>, i: usize| m.get(&label).map_or(0, |v| v[i]);
        processes.entry(service).or_default().push(json!({
            "process": label,
            "syscalls": get(&syscalls, 0),
            "errors": get(&syscalls, 1),
            "file_bytes": get(&files, 0),
            "block_bytes": get(&block, 0),
        }));
    }
    for (name, service) in services.iter_mut() {
        let mut procs = processes.remove(name).unwrap_or_default();
        procs.sort_by_key(|p| std::cmp::Reverse(p["syscalls"].as_i64().unwrap_or(0)));
        procs.truncate(TALKERS);
        let mut file_rows: Vec<(String, i64, i64)> = rows_of(aggregated.get("files"), name)
            .map(|(k, a)| {
                (
                    key_at("files", k, "file_path"),
                    counter("files", a, "read_bytes"),
                    counter("files", a, "write_bytes"),
                )
            })
            .collect();
        file_rows.sort_by_key(|(p, r, w)| (std::cmp::Reverse(r + w), p.clone()));
        file_rows.truncate(TALKERS);
        let mut devices: BTreeMap<String, [i64; 4]> = BTreeMap::new();
        for (k, a) in rows_of(aggregated.get("blockio"), name) {
            let d = devices.entry(key_at("blockio", k, "device")).or_default();
            let bytes = counter("blockio", a, "bytes");
            d[0] += counter("blockio", a, "requests");
            d[1] += bytes;
            match key_at("blockio", k, "op").as_str() {
                "read" => d[2] += bytes,
                "write" => d[3] += bytes,
                _ => {}
            }
        }
        let mut devices: Vec<(String, [i64; 4])> = devices.into_iter().collect();
        devices.sort_by_key(|(d, v)| (std::cmp::Reverse(v[1]), d.clone()));
        devices.truncate(TALKERS);
        service.talkers = json!({
            "processes": procs,
            "files": file_rows.iter().map(|(p, r, w)| json!({"path": p, "read_bytes": r, "write_bytes": w})).collect::<Vec<_>>(),
            "devices": devices.iter().map(|(d, v)| json!({"device": d, "requests": v[0], "bytes": v[1], "read_bytes": v[2], "write_bytes": v[3]})).collect::<Vec<_>>(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_and_max_are_the_outer_bucket_bounds() {
        let mut h = vec![0i64; 40];
        assert_eq!(bounds(&h), None);
        h[11] = 3; // [1024, 2048) ns
        h[20] = 1; // [524288, 1048576) ns
        assert_eq!(bounds(&h), Some((1024.0, 1_048_576.0)));
    }

    #[test]
    fn n_and_avg_use_the_tables_count_and_duration() {
        let spec = crate::tracers::views::table_spec("blockio").expect("blockio has a spec");
        assert_eq!(n_column(spec), "requests");
        assert_eq!(duration_column(spec), Some("device_ns_sum"));
        let spec = crate::tracers::views::table_spec("sql_statements").expect("sql has a spec");
        assert_eq!(n_column(spec), "calls");
        assert_eq!(duration_column(spec), Some("duration_ns_sum"));
        let mut h = vec![0i64; 40];
        h[11] = 4;
        let a = Agg {
            counters: vec![4, 1, 6000, 0, 0],
            hist: h,
        };
        let r = row(spec, &["mysql".into(), "SELECT ?".into(), "".into()], &a);
        assert_eq!(r["n"], 4);
        assert_eq!(r["avg_ns"], 1500.0);
        assert_eq!(r["min_ns"], 1024.0);
        assert_eq!(r["max_ns"], 2048.0);
        assert_eq!(r["p50_ns"], 1536.0);
    }
}
