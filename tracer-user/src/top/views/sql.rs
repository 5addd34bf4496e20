//! 3: SQL — statements per second and since top started, errors, p99, per fingerprint.

use super::{Cell, Column, Keep, Kind, View, calls_and_errors, p99, rate, total};
use crate::top::model::{Model, Sums};

const T: &str = "sql_statements";

pub const VIEW: View = View {
    key: '3',
    name: "SQL",
    tables: &[T],
    process_columns: &[
        Column::new("stmts/s", 8, Kind::Rate),
        Column::new("err/s", 7, Kind::Rate),
        Column::new("stmts", 9, Kind::Count),
        Column::new("errors", 7, Kind::Count),
        Column::new("p99", 8, Kind::Nanos),
    ],
    process_cells,
    process_sort: 2,
    detail_title: "SQL fingerprints",
    detail_columns: &[
        Column::new("fingerprint", 32, Kind::Text),
        Column::new("stmts/s", 8, Kind::Rate),
        Column::new("stmts", 9, Kind::Count),
        Column::new("errors", 7, Kind::Count),
        Column::new("p99", 8, Kind::Nanos),
    ],
    detail_rows,
    detail_sort: 2,
};

fn process_cells(m: &Model, keep: Keep<'_>) -> Vec<Cell> {
    calls_and_errors(m, keep, T)
}

fn row(m: &Model, what: String, s: &Sums) -> Vec<Cell> {
    vec![
        Cell::Text(what),
        rate(m, s, T, "calls"),
        total(m, s, T, "calls"),
        total(m, s, T, "errors"),
        p99(s),
    ]
}

fn detail_rows(m: &Model, keep: Keep<'_>) -> Vec<Vec<Cell>> {
    // Keys: system, fingerprint, status: the statuses of one fingerprint fold together.
    let key = |k: &[String]| {
        let text = k.get(1)?;
        Some(if text.is_empty() {
            "(text not seen)".to_owned()
        } else {
            text.clone()
        })
    };
    m.by_key(T, keep, &key)
        .into_iter()
        .map(|(what, s)| row(m, what, &s))
        .collect()
}
