//! d: drops — every loss since top started, per tracer and reason (the status line totals
//! them).

use super::{Cell, Column, Keep, Kind, View};
use crate::top::model::Model;

pub const VIEW: View = View {
    key: 'd',
    name: "drops",
    tables: &[],
    process_columns: &[],
    process_cells: |_, _| Vec::new(),
    process_sort: 0,
    detail_title: "everything that could not be recorded (tracer reason)",
    detail_columns: &[
        Column::new("tracer reason", 40, Kind::Text),
        Column::new("last interval", 13, Kind::Count),
        Column::new("since start", 12, Kind::Count),
    ],
    detail_rows,
    detail_sort: 2,
};

/// Drops are not per process: every row whatever the filter.
fn detail_rows(m: &Model, _: Keep<'_>) -> Vec<Vec<Cell>> {
    m.drops
        .iter()
        .map(|((tracer, reason), d)| {
            vec![
                Cell::Text(format!("{tracer} {reason}")),
                Cell::Num(Some(d.last as f64)),
                Cell::Num(Some(d.total as f64)),
            ]
        })
        .collect()
}
