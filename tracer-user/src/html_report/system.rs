//! The machine's own timelines, when the run has a `system` table (CPU by mode, memory, disk
//! and network per interval). Read generically: one chart per numeric column, one series per
//! combination of the row's text columns, values as recorded per interval (summed over rows of
//! the same interval and series). A run without the table has no such section.

use std::collections::BTreeMap;

use arrow_array::{
    Array, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, UInt32Array,
    UInt64Array,
};
use arrow_schema::DataType;
use serde_json::{Value, json};

use super::timelines::series;
use crate::analysis::load::{Run, ints, strings};

pub const TABLE: &str = "system";
/// Charts at most (one per numeric column).
const MAX_CHARTS: usize = 32;
/// Series per chart at most.
const MAX_SERIES: usize = 16;

/// A numeric column's values as f64.
fn numbers(batch: &RecordBatch, i: usize) -> Option<Vec<Option<f64>>> {
    let col = batch.column(i);
    let any = col.as_any();
    macro_rules! cast {
        ($t:ty) => {
            if let Some(a) = any.downcast_ref::<$t>() {
                return Some(
                    (0..a.len())
                        .map(|j| (!a.is_null(j)).then(|| a.value(j) as f64))
                        .collect(),
                );
            }
        };
    }
    cast!(Int64Array);
    cast!(Int32Array);
    cast!(UInt64Array);
    cast!(UInt32Array);
    cast!(Float64Array);
    cast!(Float32Array);
    None
}

/// Columns that identify a row rather than measure something.
fn is_identity(name: &str) -> bool {
    name.starts_with("interval_") || name.ends_with("_pid") || name == "pid"
}

/// The section's charts, or None when the run has no `system` table (or it has no rows).
pub fn system(run: &Run, starts: &[i64]) -> Option<Value> {
    let batches = run.tables.get(TABLE)?;
    let index: BTreeMap<i64, usize> = starts.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let n = starts.len();
    // column → series label → value per interval
    let mut charts: BTreeMap<String, BTreeMap<String, Vec<Option<f64>>>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for batch in batches {
        let Some(interval) = ints(batch, "interval_start") else {
            continue;
        };
        let schema = batch.schema();
        let labels: Vec<Vec<String>> = schema
            .fields()
            .iter()
            .filter(|f| *f.data_type() == DataType::Utf8 && !is_identity(f.name()))
            .filter_map(|f| strings(batch, f.name()))
            .collect();
        for (ci, field) in schema.fields().iter().enumerate() {
            if is_identity(field.name()) {
                continue;
            }
            let Some(values) = numbers(batch, ci) else {
                continue;
            };
            if !charts.contains_key(field.name()) {
                order.push(field.name().clone());
            }
            let chart = charts.entry(field.name().clone()).or_default();
            for (row, v) in values.iter().enumerate() {
                let (Some(v), Some(Some(start))) = (v, interval.get(row)) else {
                    continue;
                };
                let Some(&i) = index.get(start) else { continue };
                let label = labels
                    .iter()
                    .map(|l| l[row].as_str())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                let label = if label.is_empty() {
                    field.name().clone()
                } else {
                    label
                };
                let s = chart.entry(label).or_insert_with(|| vec![None; n]);
                s[i] = Some(s[i].unwrap_or(0.0) + v);
            }
        }
    }
    let list: Vec<Value> = order
        .iter()
        .filter_map(|name| {
            let chart = charts.get(name)?;
            (!chart.is_empty()).then(|| {
                json!({
                    "table": TABLE,
                    "title": format!("{name} (per interval, as recorded)"),
                    "unit": unit_of(name),
                    "series": chart.iter().take(MAX_SERIES).map(|(l, v)| series(l, v)).collect::<Vec<_>>(),
                })
            })
        })
        .take(MAX_CHARTS)
        .collect();
    (!list.is_empty()).then(|| json!({ "timelines": list }))
}

/// How a column's values read, from its name's unit suffix.
fn unit_of(name: &str) -> &'static str {
    if name.ends_with("_ns") || name.contains("_ns_") {
        "ns"
    } else if name.contains("bytes") {
        "B"
    } else {
        ""
    }
}
