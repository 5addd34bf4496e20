//! Each service's timelines over the run: rates per interval (syscalls/s, errors/s, bytes/s,
//! statements/s, requests/s per route, calls/s per method) and latency percentiles per
//! interval, from the same per-interval aggregation `diff` samples.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Services;
use crate::analysis::{
    AnalysisError, TableSpec,
    aggregate::{Agg, ByInterval, Groups, aggregate_by_interval},
    load::Run,
    series::Frame,
};

/// How a chart's values read.
#[derive(Clone, Copy)]
enum Unit {
    PerSecond,
    BytesPerSecond,
    Nanoseconds,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::PerSecond => "/s",
            Unit::BytesPerSecond => "B/s",
            Unit::Nanoseconds => "ns",
        }
    }
}

enum Kind {
    /// Counters per second. With `split`, one series per value of those key columns (the
    /// `top` largest, the rest summed as `other`) of the first counter; else one per counter.
    Rate {
        counters: &'static [&'static str],
        split: &'static [&'static str],
        top: usize,
        unit: Unit,
    },
    /// p50, p97 and p99 of the service's merged histogram in each interval.
    Latency,
}

struct Chart {
    table: &'static str,
    title: &'static str,
    kind: Kind,
}

/// The charts of a service, in page order (tables the run lacks are skipped).
const CHARTS: &[Chart] = &[
    Chart {
        table: "syscalls",
        title: "System calls/s",
        kind: Kind::Rate {
            counters: &["calls"],
            split: &[],
            top: 0,
            unit: Unit::PerSecond,
        },
    },
    Chart {
        table: "syscalls",
        title: "Failed system calls/s",
        kind: Kind::Rate {
            counters: &["errors"],
            split: &[],
            top: 0,
            unit: Unit::PerSecond,
        },
    },
    Chart {
        table: "fileio",
        title: "File I/O bytes/s (by descriptor kind and operation)",
        kind: Kind::Rate {
            counters: &["bytes"],
            split: &["file_kind", "op"],
            top: 6,
            unit: Unit::BytesPerSecond,
        },
    },
    Chart {
        table: "blockio",
        title: "Block I/O bytes/s (by operation)",
        kind: Kind::Rate {
            counters: &["bytes"],
            split: &["op"],
            top: 4,
            unit: Unit::BytesPerSecond,
        },
    },
    Chart {
        table: "blockio",
        title: "Block device time (percentiles per interval)",
        kind: Kind::Latency,
    },
    Chart {
        table: "sql_statements",
        title: "SQL statements/s",
        kind: Kind::Rate {
            counters: &["calls", "errors"],
            split: &[],
            top: 0,
            unit: Unit::PerSecond,
        },
    },
    Chart {
        table: "sql_statements",
        title: "SQL latency (percentiles per interval)",
        kind: Kind::Latency,
    },
    Chart {
        table: "http_requests",
        title: "HTTP requests/s per route",
        kind: Kind::Rate {
            counters: &["calls"],
            split: &["direction", "http_request_method", "http_route"],
            top: 8,
            unit: Unit::PerSecond,
        },
    },
    Chart {
        table: "http_requests",
        title: "HTTP latency (percentiles per interval)",
        kind: Kind::Latency,
    },
    Chart {
        table: "rpc_calls",
        title: "RPC calls/s per method",
        kind: Kind::Rate {
            counters: &["calls"],
            split: &["direction", "rpc_kind", "rpc_method"],
            top: 8,
            unit: Unit::PerSecond,
        },
    },
    Chart {
        table: "rpc_calls",
        title: "RPC call → reply latency (percentiles per interval)",
        kind: Kind::Latency,
    },
    Chart {
        table: "cache_ops",
        title: "Cache operations/s",
        kind: Kind::Rate {
            counters: &["calls"],
            split: &["db_operation_name"],
            top: 6,
            unit: Unit::PerSecond,
        },
    },
];

/// Rounded to what a chart shows (keeps the page small: 3 decimals).
pub fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One series: a label and a value per interval.
pub fn series(label: &str, values: &[Option<f64>]) -> Value {
    json!({"label": label, "values": values.iter().map(|v| v.map(round)).collect::<Vec<_>>()})
}

/// The interval starts, as Unix seconds (the charts' x axis).
pub fn axis(frame: &Frame) -> Vec<f64> {
    frame.starts.iter().map(|s| *s as f64 / 1e6).collect()
}

/// Adds every service's timelines.
pub fn timelines(
    run: &Run,
    frame: &Frame,
    groups: &Groups,
    services: &mut Services,
) -> Result<(), AnalysisError> {
    let index: BTreeMap<i64, usize> = frame
        .starts
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i))
        .collect();
    for spec in crate::tracers::views::table_specs() {
        let charts: Vec<&Chart> = CHARTS.iter().filter(|c| c.table == spec.table).collect();
        if charts.is_empty() || !run.tables.contains_key(spec.table) {
            continue;
        }
        for chart in charts {
            // Aggregated per chart with only its columns: a rate chart needs no histogram, a
            // latency chart no key — per interval, that is most of the memory.
            let narrow = match chart.kind {
                Kind::Rate {
                    counters, split, ..
                } => TableSpec {
                    keys: split,
                    counters,
                    histogram: None,
                    default_sort: counters[0],
                    ..**spec
                },
                Kind::Latency => TableSpec {
                    keys: &[],
                    counters: &[],
                    ..**spec
                },
            };
            let by = aggregate_by_interval(run, &narrow, groups)?;
            add_chart(chart, &narrow, &by, frame, &index, services);
        }
    }
    Ok(())
}

/// One key's sums per interval start.
type KeyIntervals<'a> = (&'a Vec<String>, &'a BTreeMap<i64, Agg>);

/// One chart of every service, from its table aggregated per interval.
fn add_chart(
    chart: &Chart,
    spec: &TableSpec,
    by: &ByInterval,
    frame: &Frame,
    index: &BTreeMap<i64, usize>,
    services: &mut Services,
) {
    let n = frame.starts.len();
    {
        let mut by_group: BTreeMap<&str, Vec<KeyIntervals>> = BTreeMap::new();
        for ((g, k), per) in by {
            by_group.entry(g).or_default().push((k, per));
        }
        let col = |c: &str| spec.counters.iter().position(|x| *x == c);
        let key_col = |c: &str| spec.keys.iter().position(|x| *x == c);
        for (group, rows) in by_group {
            let service = services.entry(group.to_owned()).or_default();
            {
                let (series_list, unit) = match chart.kind {
                    Kind::Rate {
                        counters,
                        split,
                        top,
                        unit,
                    } => {
                        let mut sums: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                        for (key, per) in &rows {
                            let label = |c: &str| {
                                if split.is_empty() {
                                    c.to_owned()
                                } else {
                                    split
                                        .iter()
                                        .filter_map(|s| key_col(s).map(|i| key[i].as_str()))
                                        .collect::<Vec<_>>()
                                        .join(" ")
                                }
                            };
                            let used = if split.is_empty() {
                                counters
                            } else {
                                &counters[..1]
                            };
                            for c in used {
                                let Some(ci) = col(c) else { continue };
                                let v = sums.entry(label(c)).or_insert_with(|| vec![0.0; n]);
                                for (start, agg) in per.iter() {
                                    if let Some(&i) = index.get(start) {
                                        v[i] += agg.counters[ci] as f64;
                                    }
                                }
                            }
                        }
                        let mut ordered: Vec<(String, Vec<f64>)> = sums.into_iter().collect();
                        if !split.is_empty() {
                            ordered.sort_by(|a, b| {
                                b.1.iter()
                                    .sum::<f64>()
                                    .total_cmp(&a.1.iter().sum::<f64>())
                                    .then_with(|| a.0.cmp(&b.0))
                            });
                            if ordered.len() > top {
                                let rest: Vec<(String, Vec<f64>)> = ordered.split_off(top);
                                let mut other = vec![0.0; n];
                                for (_, v) in rest {
                                    for (o, x) in other.iter_mut().zip(v) {
                                        *o += x;
                                    }
                                }
                                ordered.push(("other".to_owned(), other));
                            }
                        }
                        let list: Vec<Value> = ordered
                            .iter()
                            .map(|(label, sums)| {
                                let rates: Vec<Option<f64>> = sums
                                    .iter()
                                    .zip(&frame.lengths)
                                    .map(|(s, l)| Some(if *l > 0.0 { s / l } else { 0.0 }))
                                    .collect();
                                series(label, &rates)
                            })
                            .collect();
                        (list, unit)
                    }
                    Kind::Latency => {
                        let mut merged: Vec<Agg> = vec![Agg::default(); n];
                        for (_, per) in &rows {
                            for (start, agg) in per.iter() {
                                if let Some(&i) = index.get(start) {
                                    merged[i].merge(agg);
                                }
                            }
                        }
                        if merged.iter().all(|a| a.hist.iter().all(|c| *c == 0)) {
                            continue;
                        }
                        let list = [("p50", 0.50), ("p97", 0.97), ("p99", 0.99)]
                            .iter()
                            .map(|(name, q)| {
                                let v: Vec<Option<f64>> =
                                    merged.iter().map(|a| a.quantile(*q)).collect();
                                series(name, &v)
                            })
                            .collect();
                        (list, Unit::Nanoseconds)
                    }
                };
                service.timelines.push(json!({
                    "table": spec.table,
                    "title": chart.title,
                    "unit": unit.name(),
                    "series": series_list,
                }));
            }
        }
    }
}
