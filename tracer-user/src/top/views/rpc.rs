//! 5: RPC and cache — AMQP calls per method and kind, memcached operations per server and
//! command, with hits.

use super::{Cell, Column, Keep, Kind, View, p99, rate, total};
use crate::top::model::{Model, Sums};

const RPC: &str = "rpc_calls";
const CACHE: &str = "cache_ops";

pub const VIEW: View = View {
    key: '5',
    name: "RPC/cache",
    tables: &[RPC, CACHE],
    process_columns: &[
        Column::new("rpc/s", 8, Kind::Rate),
        Column::new("rpc err", 7, Kind::Count),
        Column::new("cache/s", 8, Kind::Rate),
        Column::new("hit %", 6, Kind::Percent),
        Column::new("cache p99", 9, Kind::Nanos),
    ],
    process_cells,
    process_sort: 0,
    detail_title: "RPC (direction kind method) and cache (server command)",
    detail_columns: &[
        Column::new("what", 28, Kind::Text),
        Column::new("ops/s", 7, Kind::Rate),
        Column::new("ops", 8, Kind::Count),
        Column::new("errors", 6, Kind::Count),
        Column::new("hit %", 6, Kind::Percent),
        Column::new("p99", 8, Kind::Nanos),
    ],
    detail_rows,
    detail_sort: 2,
};

fn hit_ratio(m: &Model, s: &Sums) -> Cell {
    let hits = s.total(m.counter(CACHE, "hits"));
    let lookups = s.total(m.counter(CACHE, "lookups"));
    Cell::Num((lookups > 0).then(|| hits as f64 / lookups as f64))
}

fn process_cells(m: &Model, keep: Keep<'_>) -> Vec<Cell> {
    let rpc = m.sum(RPC, keep, &|_| true);
    let cache = m.sum(CACHE, keep, &|_| true);
    vec![
        rate(m, &rpc, RPC, "calls"),
        total(m, &rpc, RPC, "errors"),
        rate(m, &cache, CACHE, "calls"),
        hit_ratio(m, &cache),
        p99(&cache),
    ]
}

fn detail_rows(m: &Model, keep: Keep<'_>) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    // Keys: direction, kind, method, routing key.
    let rpc_key = |k: &[String]| Some(format!("rpc {} {} {}", k.first()?, k.get(1)?, k.get(2)?));
    for (what, s) in m.by_key(RPC, keep, &rpc_key) {
        rows.push(vec![
            Cell::Text(what),
            rate(m, &s, RPC, "calls"),
            total(m, &s, RPC, "calls"),
            total(m, &s, RPC, "errors"),
            Cell::Num(None),
            p99(&s),
        ]);
    }
    // Keys: server, command.
    let cache_key = |k: &[String]| Some(format!("cache {} {}", k.first()?, k.get(1)?));
    for (what, s) in m.by_key(CACHE, keep, &cache_key) {
        rows.push(vec![
            Cell::Text(what),
            rate(m, &s, CACHE, "calls"),
            total(m, &s, CACHE, "calls"),
            total(m, &s, CACHE, "errors"),
            hit_ratio(m, &s),
            p99(&s),
        ]);
    }
    rows
}
