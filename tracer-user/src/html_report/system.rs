//! The machine's own timelines, when the run has the system tables (`system`, `system_disk`,
//! `system_net`): CPU time by mode as a share of all CPUs' time, load, memory, tasks, context
//! switches and forks, TCP segments, and per disk and interface the bytes moved. Values are the
//! tables' own per interval (deltas for counters, the interval's end for gauges; CPU shares are
//! each mode's time over all modes' time). A run without the tables has no such section.

use std::collections::BTreeMap;

use arrow_array::{Array, BooleanArray, Float64Array, RecordBatch};
use serde_json::{Value, json};

use super::timelines::series;
use crate::{
    analysis::load::{Run, ints, strings},
    tracers::system::{CPU_MODE_NAMES, DISK_TABLE, NET_TABLE, TABLE},
};

/// Charts of the `system` table's own columns: title, unit, columns (each a series).
const CHARTS: &[(&str, &str, &[&str])] = &[
    ("Load average", "", &["load_1m", "load_5m", "load_15m"]),
    (
        "Memory",
        "B",
        &[
            "mem_used_bytes",
            "mem_available_bytes",
            "mem_page_cache_bytes",
            "mem_dirty_bytes",
            "mem_writeback_bytes",
            "swap_used_bytes",
        ],
    ),
    (
        "Context switches and forks (per interval)",
        "",
        &["context_switches", "forks"],
    ),
    (
        "Tasks running and blocked",
        "",
        &["procs_running", "procs_blocked"],
    ),
    (
        "TCP segments sent and retransmitted (per interval)",
        "",
        &["tcp_out_segments", "tcp_retransmitted_segments"],
    ),
];

/// A column's values as f64 (integers or doubles).
fn numbers(batch: &RecordBatch, name: &str) -> Option<Vec<Option<f64>>> {
    if let Some(a) = batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
    {
        return Some(
            (0..a.len())
                .map(|i| (!a.is_null(i)).then(|| a.value(i)))
                .collect(),
        );
    }
    ints(batch, name).map(|v| v.into_iter().map(|x| x.map(|x| x as f64)).collect())
}

/// Series label → value per interval, added up over rows of the same interval and label.
type Series = BTreeMap<String, Vec<Option<f64>>>;

struct Axis<'a> {
    index: BTreeMap<i64, usize>,
    n: usize,
    run: &'a Run,
}

impl Axis<'_> {
    /// Rows of `table` by interval: calls `f(batch, row, interval index)`.
    fn rows(&self, table: &str, mut f: impl FnMut(&RecordBatch, usize, usize)) {
        for batch in self.run.tables.get(table).into_iter().flatten() {
            let Some(starts) = ints(batch, "interval_start") else {
                continue;
            };
            for (row, start) in starts.iter().enumerate() {
                if let Some(&i) = start.and_then(|s| self.index.get(&s)) {
                    f(batch, row, i);
                }
            }
        }
    }

    fn add(&self, s: &mut Series, label: &str, i: usize, v: f64) {
        let values = s
            .entry(label.to_owned())
            .or_insert_with(|| vec![None; self.n]);
        values[i] = Some(values[i].unwrap_or(0.0) + v);
    }
}

/// A chart of the series that are not all absent or zero (a device that moved nothing has no
/// line); none left, no chart.
fn chart(title: &str, table: &str, unit: &str, s: &Series) -> Option<Value> {
    let lines: Vec<Value> = s
        .iter()
        .filter(|(_, v)| v.iter().any(|x| x.is_some_and(|x| x != 0.0)))
        .map(|(l, v)| series(l, v))
        .collect();
    (!lines.is_empty()).then(|| {
        json!({
            "table": table,
            "title": title,
            "unit": unit,
            "series": lines,
        })
    })
}

/// CPU time by mode, % of all CPUs' time in the interval.
fn cpu(axis: &Axis<'_>) -> Series {
    let mut s = Series::new();
    axis.rows(TABLE, |batch, row, i| {
        let ns: Vec<f64> = CPU_MODE_NAMES
            .iter()
            .map(|m| {
                numbers(batch, &format!("cpu_{m}_ns"))
                    .and_then(|v| v[row])
                    .unwrap_or(0.0)
            })
            .collect();
        let all: f64 = ns.iter().sum();
        if all > 0.0 {
            for (m, v) in CPU_MODE_NAMES.iter().zip(&ns) {
                axis.add(&mut s, m, i, 100.0 * v / all);
            }
        }
    });
    s
}

fn columns(axis: &Axis<'_>, cols: &[&str]) -> Series {
    let mut s = Series::new();
    axis.rows(TABLE, |batch, row, i| {
        for c in cols {
            if let Some(v) = numbers(batch, c).and_then(|v| v[row]) {
                axis.add(&mut s, c, i, v);
            }
        }
    });
    s
}

/// Bytes per interval of each whole disk (a partition's bytes are its disk's too), or of each
/// interface: `<name> <column>`.
fn per_device(axis: &Axis<'_>, table: &str, name: &str, cols: &[&str]) -> Series {
    let mut s = Series::new();
    axis.rows(table, |batch, row, i| {
        let partition = batch
            .column_by_name("partition")
            .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
            .is_some_and(|p| p.value(row));
        if partition {
            return;
        }
        let Some(device) = strings(batch, name).map(|d| d[row].clone()) else {
            return;
        };
        for c in cols {
            if let Some(v) = numbers(batch, c).and_then(|v| v[row]) {
                axis.add(&mut s, &format!("{device} {c}"), i, v);
            }
        }
    });
    // Deltas: an interval without a row for a device (of those the machine's table covers) is
    // an interval in which it moved nothing.
    let mut covered = vec![false; axis.n];
    axis.rows(TABLE, |_, _, i| covered[i] = true);
    for values in s.values_mut() {
        for (v, c) in values.iter_mut().zip(&covered) {
            if v.is_none() && *c {
                *v = Some(0.0);
            }
        }
    }
    s
}

/// The section's charts, or None when the run has no system tables (or they have no rows).
pub fn system(run: &Run, starts: &[i64]) -> Option<Value> {
    let axis = Axis {
        index: starts.iter().enumerate().map(|(i, s)| (*s, i)).collect(),
        n: starts.len(),
        run,
    };
    let mut list: Vec<Value> = Vec::new();
    list.extend(chart(
        "CPU time by mode (% of all CPUs)",
        TABLE,
        "%",
        &cpu(&axis),
    ));
    for (title, unit, cols) in CHARTS {
        list.extend(chart(title, TABLE, unit, &columns(&axis, cols)));
    }
    list.extend(chart(
        "Disks: bytes read and written (per interval)",
        DISK_TABLE,
        "B",
        &per_device(&axis, DISK_TABLE, "device", &["read_bytes", "write_bytes"]),
    ));
    list.extend(chart(
        "Network: bytes received and sent (per interval)",
        NET_TABLE,
        "B",
        &per_device(&axis, NET_TABLE, "interface", &["rx_bytes", "tx_bytes"]),
    ));
    (!list.is_empty()).then(|| json!({ "timelines": list }))
}
