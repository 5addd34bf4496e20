//! 1: system calls — calls and errors per second and since top started, the p99 latency.

use super::{Cell, Column, Keep, Kind, View, p99, rate, total};
use crate::top::model::Model;

const T: &str = "syscalls";

pub const VIEW: View = View {
    key: '1',
    name: "syscalls",
    tables: &[T],
    process_columns: &[
        Column::new("calls/s", 9, Kind::Rate),
        Column::new("err/s", 7, Kind::Rate),
        Column::new("calls", 10, Kind::Count),
        Column::new("errors", 8, Kind::Count),
        Column::new("p99", 8, Kind::Nanos),
    ],
    process_cells,
    process_sort: 2,
    detail_title: "system calls",
    detail_columns: &[
        Column::new("syscall", 18, Kind::Text),
        Column::new("calls/s", 9, Kind::Rate),
        Column::new("err/s", 7, Kind::Rate),
        Column::new("calls", 10, Kind::Count),
        Column::new("errors", 8, Kind::Count),
        Column::new("p99", 8, Kind::Nanos),
    ],
    detail_rows,
    detail_sort: 3,
};

fn cells(m: &Model, s: &crate::top::model::Sums) -> Vec<Cell> {
    vec![
        rate(m, s, T, "calls"),
        rate(m, s, T, "errors"),
        total(m, s, T, "calls"),
        total(m, s, T, "errors"),
        p99(s),
    ]
}

fn process_cells(m: &Model, keep: Keep<'_>) -> Vec<Cell> {
    cells(m, &m.sum(T, keep, &|_| true))
}

fn detail_rows(m: &Model, keep: Keep<'_>) -> Vec<Vec<Cell>> {
    m.by_key(T, keep, &|k| k.first().cloned())
        .into_iter()
        .map(|(name, s)| {
            let mut row = vec![Cell::Text(name)];
            row.extend(cells(m, &s));
            row
        })
        .collect()
}
