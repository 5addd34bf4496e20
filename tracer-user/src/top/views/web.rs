//! 4: HTTP — requests per second and since top started, 5xx, p99, per direction, method and
//! route.

use super::{Cell, Column, Keep, Kind, View, calls_and_errors, p99, rate, total};
use crate::top::model::Model;

const T: &str = "http_requests";

pub const VIEW: View = View {
    key: '4',
    name: "HTTP",
    tables: &[T],
    process_columns: &[
        Column::new("req/s", 8, Kind::Rate),
        Column::new("5xx/s", 7, Kind::Rate),
        Column::new("reqs", 9, Kind::Count),
        Column::new("5xx", 7, Kind::Count),
        Column::new("p99", 8, Kind::Nanos),
    ],
    process_cells,
    process_sort: 2,
    detail_title: "HTTP routes (in: served, out: called)",
    detail_columns: &[
        Column::new("route", 30, Kind::Text),
        Column::new("req/s", 8, Kind::Rate),
        Column::new("reqs", 9, Kind::Count),
        Column::new("5xx", 6, Kind::Count),
        Column::new("p99", 8, Kind::Nanos),
    ],
    detail_rows,
    detail_sort: 2,
};

fn process_cells(m: &Model, keep: Keep<'_>) -> Vec<Cell> {
    calls_and_errors(m, keep, T)
}

fn detail_rows(m: &Model, keep: Keep<'_>) -> Vec<Vec<Cell>> {
    // Keys: direction, method, route, protocol.
    let key = |k: &[String]| {
        let dir = match k.first()?.as_str() {
            "server" => "in",
            "client" => "out",
            other => other,
        };
        Some(format!("{dir} {} {}", k.get(1)?, k.get(2)?))
    };
    m.by_key(T, keep, &key)
        .into_iter()
        .map(|(what, s)| {
            vec![
                Cell::Text(what),
                rate(m, &s, T, "calls"),
                total(m, &s, T, "calls"),
                total(m, &s, T, "errors"),
                p99(&s),
            ]
        })
        .collect()
}
