//! What `summary` and `diff` show of each tracer's tables. Each tracer declares its views in its
//! registration; `analysis` reads them through [`table_specs`] and [`metrics`], in report order.

use std::sync::LazyLock;

/// How an interval table is summarized: which columns identify a row's subject (keys), which
/// add up (counters) and which histogram gives its latency percentiles.
#[derive(Debug)]
pub struct TableSpec {
    pub table: &'static str,
    pub title: &'static str,
    pub keys: &'static [&'static str],
    pub counters: &'static [&'static str],
    /// The latency histogram, if the table has one.
    pub histogram: Option<&'static str>,
    /// The counter that orders rows by default.
    pub default_sort: &'static str,
    /// Place in `summary`'s report (lower first).
    pub rank: u8,
}

/// What a metric measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Measure {
    /// The sum of a counter column, normalized.
    Counter(&'static str),
    /// A quantile of the table's latency histogram, in ns (not normalized), taken only when
    /// both runs have at least `min_samples` calls for the key.
    Quantile { q: f64, min_samples: i64 },
    /// One counter's sum divided by another's (SQL statements per request), not normalized.
    Ratio {
        numerator: &'static str,
        denominator: &'static str,
    },
}

/// A metric `diff` compares.
#[derive(Debug)]
pub struct Metric {
    /// Stable name, used by `--threshold-for`/`--floor` and in the JSON report.
    pub id: &'static str,
    pub table: &'static str,
    /// What a reader sees.
    pub title: &'static str,
    /// Columns that identify the metric's subject (a subset of the table spec's keys).
    pub keys: &'static [&'static str],
    /// Only rows whose column has one of these values.
    pub only: &'static [(&'static str, &'static [&'static str])],
    /// Leaving out rows whose column has one of these values.
    pub except: &'static [(&'static str, &'static [&'static str])],
    pub measure: Measure,
    /// Relative worsening that counts (0.10: 10 % more per unit).
    pub threshold: f64,
    /// Absolute worsening that counts: in the head run's own terms, the count (calls, bytes)
    /// beyond what the base rate predicts; for quantiles, ns.
    pub floor: f64,
    /// A key present only in head is a regression by itself (a new SQL fingerprint).
    pub new_is_regression: bool,
    /// Place in `diff`'s report and in `--threshold-for`'s list (lower first).
    pub rank: u8,
}

/// Calls a key needs in both runs before its p97 is compared: the 97th percentile of fewer is
/// a handful of calls, which one noisy moment on a CI machine moves by milliseconds.
pub const MIN_LATENCY_SAMPLES: i64 = 1000;

/// Every table spec of every registered tracer, in report order.
pub fn table_specs() -> &'static [&'static TableSpec] {
    static SPECS: LazyLock<Vec<&'static TableSpec>> = LazyLock::new(|| {
        let mut specs: Vec<&'static TableSpec> = super::REGISTRY
            .iter()
            .flat_map(|r| r.tables.iter().filter_map(|t| t.summary.as_ref()))
            .collect();
        specs.sort_by_key(|s| s.rank);
        specs
    });
    &SPECS
}

/// The spec of `table`, if some tracer summarizes it.
pub fn table_spec(table: &str) -> Option<&'static TableSpec> {
    table_specs().iter().copied().find(|s| s.table == table)
}

/// Every metric of every registered tracer, in report order.
pub fn metrics() -> &'static [&'static Metric] {
    static METRICS: LazyLock<Vec<&'static Metric>> = LazyLock::new(|| {
        let mut metrics: Vec<&'static Metric> =
            super::REGISTRY.iter().flat_map(|r| r.metrics).collect();
        metrics.sort_by_key(|m| m.rank);
        metrics
    });
    &METRICS
}

#[cfg(test)]
mod tests {
    use arrow_schema::DataType;

    use super::*;
    use crate::tracers::all_tables;

    fn column_type(table: &str, column: &str) -> Option<DataType> {
        let t = all_tables().into_iter().find(|t| t.name == table)?;
        let schema = (t.schema)();
        schema
            .field_with_name(column)
            .ok()
            .map(|f| f.data_type().clone())
    }

    #[test]
    fn every_spec_names_columns_its_table_has() {
        for spec in table_specs() {
            for k in spec.keys {
                // Strings, or integers shown as their digits (a line number).
                assert!(
                    matches!(
                        column_type(spec.table, k),
                        Some(DataType::Utf8 | DataType::Int32)
                    ),
                    "{}.{k} is not a string or int32 column",
                    spec.table
                );
            }
            for c in spec.counters {
                assert_eq!(
                    column_type(spec.table, c),
                    Some(DataType::Int64),
                    "{}.{c} is not an int64 column",
                    spec.table
                );
            }
            if let Some(h) = spec.histogram {
                assert!(
                    matches!(column_type(spec.table, h), Some(DataType::List(_))),
                    "{}.{h} is not a histogram",
                    spec.table
                );
            }
            assert!(spec.counters.contains(&spec.default_sort));
        }
    }

    #[test]
    fn every_metric_uses_its_tables_spec() {
        let mut ids = std::collections::BTreeSet::new();
        for m in metrics() {
            assert!(ids.insert(m.id), "metric {} twice", m.id);
            let spec = table_spec(m.table).expect("the metric's table has a spec");
            for k in m.keys.iter().chain(m.only.iter().map(|(k, _)| k)) {
                assert!(spec.keys.contains(k), "{}: {k} is not a key", m.id);
            }
            match m.measure {
                Measure::Counter(c) => assert!(spec.counters.contains(&c), "{}: {c}", m.id),
                Measure::Quantile { .. } => assert!(spec.histogram.is_some(), "{}", m.id),
                Measure::Ratio {
                    numerator,
                    denominator,
                } => {
                    assert!(spec.counters.contains(&numerator), "{}", m.id);
                    assert!(spec.counters.contains(&denominator), "{}", m.id);
                }
            }
        }
    }

    #[test]
    fn report_orders_are_total() {
        let ranks: Vec<u8> = table_specs().iter().map(|s| s.rank).collect();
        let mut unique = ranks.clone();
        unique.dedup();
        assert_eq!(ranks, unique, "two table specs share a rank");
        let ranks: Vec<u8> = metrics().iter().map(|m| m.rank).collect();
        let mut unique = ranks.clone();
        unique.dedup();
        assert_eq!(ranks, unique, "two metrics share a rank");
    }
}
