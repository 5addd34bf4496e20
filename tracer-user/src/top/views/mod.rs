//! top's views, one module each: what a view shows is a table of processes (grouped by
//! service) and a table of details (syscalls, files and disks, SQL fingerprints, routes,
//! methods…), each a list of columns and a function that fills them from the [`Model`]. Adding
//! a view (the `system` table, say) is one module and one line in [`VIEWS`].

pub mod drops;
pub mod io;
pub mod rpc;
pub mod sql;
pub mod syscalls;
pub mod web;

use super::model::{Model, ProcId, Sums};
use crate::analysis::percentile::quantile;

/// How a column's numbers are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// An exact count (abbreviated only when it does not fit).
    Count,
    /// Per second.
    Rate,
    Bytes,
    /// Bytes per second.
    ByteRate,
    /// A duration in ns.
    Nanos,
    /// A fraction shown as a percentage.
    Percent,
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub title: &'static str,
    pub width: u16,
    pub kind: Kind,
}

impl Column {
    pub const fn new(title: &'static str, width: u16, kind: Kind) -> Column {
        Column { title, width, kind }
    }
}

/// One cell: text, or a number (None: nothing to show, such as the p99 of no calls).
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    Num(Option<f64>),
}

/// Which processes a table covers.
pub type Keep<'a> = &'a dyn Fn(&ProcId) -> bool;

/// A view: its key, its name, and its two tables.
pub struct View {
    pub key: char,
    pub name: &'static str,
    /// The tables it reads (to say which tracer to enable when none of them is traced).
    pub tables: &'static [&'static str],
    /// The process table's numeric columns (after the name and PID); empty: no process table.
    pub process_columns: &'static [Column],
    /// One process table row over the processes `keep` accepts (a service or one process).
    pub process_cells: fn(&Model, Keep<'_>) -> Vec<Cell>,
    /// The process column sorted by until `s` says otherwise.
    pub process_sort: usize,
    pub detail_title: &'static str,
    /// The detail table's columns, the first its key (text).
    pub detail_columns: &'static [Column],
    /// The detail table's rows over the processes `keep` accepts.
    pub detail_rows: fn(&Model, Keep<'_>) -> Vec<Vec<Cell>>,
    /// The detail column sorted by until `s` says otherwise: a total, so that rows stay put.
    pub detail_sort: usize,
}

/// Every view, in key order.
pub const VIEWS: &[&View] = &[
    &syscalls::VIEW,
    &io::VIEW,
    &sql::VIEW,
    &web::VIEW,
    &rpc::VIEW,
    &drops::VIEW,
];

/// Counter `name` of `table` per second in the last interval.
pub fn rate(m: &Model, s: &Sums, table: &str, name: &str) -> Cell {
    Cell::Num(Some(
        s.last(m.counter(table, name)) as f64 / m.interval_secs,
    ))
}

/// Counter `name` of `table` since top started.
pub fn total(m: &Model, s: &Sums, table: &str, name: &str) -> Cell {
    Cell::Num(Some(s.total(m.counter(table, name)) as f64))
}

/// A process row of a table counted in calls and errors: both per second and since top
/// started, and the p99.
pub fn calls_and_errors(m: &Model, keep: Keep<'_>, table: &str) -> Vec<Cell> {
    let s = m.sum(table, keep, &|_| true);
    vec![
        rate(m, &s, table, "calls"),
        rate(m, &s, table, "errors"),
        total(m, &s, table, "calls"),
        total(m, &s, table, "errors"),
        p99(&s),
    ]
}

/// The p99 of the totals' histogram.
pub fn p99(s: &Sums) -> Cell {
    Cell::Num(quantile(&s.total.hist, 0.99))
}

/// A number as it fits in `width` columns.
pub fn format(kind: Kind, v: Option<f64>, width: usize) -> String {
    let Some(v) = v else {
        return "-".to_owned();
    };
    match kind {
        Kind::Text => String::new(),
        Kind::Count => {
            let exact = format!("{}", v.round() as i64);
            if exact.len() <= width { exact } else { si(v) }
        }
        Kind::Rate => {
            if v == 0.0 {
                "0".to_owned()
            } else if v < 10.0 {
                format!("{v:.1}")
            } else if v < 100_000.0 {
                format!("{}", v.round() as i64)
            } else {
                si(v)
            }
        }
        Kind::Bytes => bytes(v),
        Kind::ByteRate => format!("{}/s", bytes(v)),
        Kind::Nanos => nanos(v),
        Kind::Percent => format!("{:.1}%", v * 100.0),
    }
}

/// 1.2k, 3.4M, 5.6G.
fn si(v: f64) -> String {
    let units = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in units {
        if v.abs() >= scale {
            return format!("{:.1}{unit}", v / scale);
        }
    }
    format!("{v:.0}")
}

/// 512B, 1.5K, 3.2M, 1.0G (powers of 1024).
fn bytes(v: f64) -> String {
    let units = [
        (1u64 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (scale, unit) in units {
        let scale = scale as f64;
        if v.abs() >= scale {
            return format!("{:.1}{unit}", v / scale);
        }
    }
    format!("{v:.0}B")
}

/// 850ns, 12µs, 4.5ms, 1.20s.
fn nanos(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0}ns")
    } else if v < 1e4 {
        format!("{:.1}µs", v / 1e3)
    } else if v < 1e6 {
        format!("{:.0}µs", v / 1e3)
    } else if v < 1e7 {
        format!("{:.1}ms", v / 1e6)
    } else if v < 1e9 {
        format!("{:.0}ms", v / 1e6)
    } else {
        format!("{:.2}s", v / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_when_they_fit() {
        assert_eq!(format(Kind::Count, Some(4321.0), 8), "4321");
        assert_eq!(format(Kind::Count, Some(123_456_789.0), 8), "123.5M");
        assert_eq!(format(Kind::Count, None, 8), "-");
    }

    #[test]
    fn units_read_as_a_person_writes_them() {
        assert_eq!(format(Kind::Rate, Some(2.25), 8), "2.2");
        assert_eq!(format(Kind::Rate, Some(1234.4), 8), "1234");
        assert_eq!(format(Kind::Rate, Some(2_500_000.0), 8), "2.5M");
        assert_eq!(format(Kind::ByteRate, Some(1536.0), 9), "1.5K/s");
        assert_eq!(format(Kind::Bytes, Some(512.0), 9), "512B");
        assert_eq!(format(Kind::Nanos, Some(850.0), 8), "850ns");
        assert_eq!(format(Kind::Nanos, Some(4_500_000.0), 8), "4.5ms");
        assert_eq!(format(Kind::Nanos, Some(1_200_000_000.0), 8), "1.20s");
        assert_eq!(format(Kind::Percent, Some(0.5), 8), "50.0%");
    }
}
