//! 2: files and disks — bytes read and written through descriptors (per kind: file, socket,
//! pipe) and by the block layer (per device, with writeback), fsyncs.

use super::{Cell, Column, Keep, Kind, View, p99, rate, total};
use crate::top::model::{Model, Sums};

const FILEIO: &str = "fileio";
const BLOCKIO: &str = "blockio";
const SYNCS: &[&str] = &["fsync", "fdatasync", "sync_file_range"];

pub const VIEW: View = View {
    key: '2',
    name: "files/disk",
    tables: &[FILEIO, BLOCKIO],
    process_columns: &[
        Column::new("file R/s", 9, Kind::ByteRate),
        Column::new("file W/s", 9, Kind::ByteRate),
        Column::new("disk R/s", 9, Kind::ByteRate),
        Column::new("disk W/s", 9, Kind::ByteRate),
        Column::new("fsyncs", 7, Kind::Count),
    ],
    process_cells,
    process_sort: 1,
    detail_title: "descriptor I/O (kind op) and block I/O (disk device op)",
    detail_columns: &[
        Column::new("what", 22, Kind::Text),
        Column::new("ops/s", 7, Kind::Rate),
        Column::new("bytes/s", 9, Kind::ByteRate),
        Column::new("ops", 8, Kind::Count),
        Column::new("bytes", 8, Kind::Bytes),
        Column::new("p99", 8, Kind::Nanos),
    ],
    detail_rows,
    detail_sort: 4,
};

fn byte_rate(m: &Model, s: &Sums, table: &str) -> Cell {
    rate(m, s, table, "bytes")
}

fn process_cells(m: &Model, keep: Keep<'_>) -> Vec<Cell> {
    let file = |op: &'static str| {
        m.sum(FILEIO, keep, &move |k: &[String]| {
            k.first().is_some_and(|x| x == "file") && k.get(1).is_some_and(|x| x == op)
        })
    };
    let disk = |op: &'static str| {
        m.sum(BLOCKIO, keep, &move |k: &[String]| {
            k.get(1).is_some_and(|x| x == op)
        })
    };
    let syncs = m.sum(FILEIO, keep, &|k: &[String]| {
        k.get(1).is_some_and(|x| SYNCS.contains(&x.as_str()))
    });
    vec![
        byte_rate(m, &file("read"), FILEIO),
        byte_rate(m, &file("write"), FILEIO),
        byte_rate(m, &disk("read"), BLOCKIO),
        byte_rate(m, &disk("write"), BLOCKIO),
        total(m, &syncs, FILEIO, "calls"),
    ]
}

fn detail_rows(m: &Model, keep: Keep<'_>) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    for (what, s) in m.by_key(FILEIO, keep, &|k| Some(k.join(" "))) {
        rows.push(vec![
            Cell::Text(what),
            rate(m, &s, FILEIO, "calls"),
            rate(m, &s, FILEIO, "bytes"),
            total(m, &s, FILEIO, "calls"),
            total(m, &s, FILEIO, "bytes"),
            p99(&s),
        ]);
    }
    // device, op, attribution: "disk vda write" (+ " wb" for writeback charged to the dirtier).
    let disk_key = |k: &[String]| {
        let (dev, op, attr) = (k.first()?, k.get(1)?, k.get(2)?);
        let wb = if attr == "direct" { "" } else { " wb" };
        Some(format!("disk {dev} {op}{wb}"))
    };
    for (what, s) in m.by_key(BLOCKIO, keep, &disk_key) {
        rows.push(vec![
            Cell::Text(what),
            rate(m, &s, BLOCKIO, "requests"),
            rate(m, &s, BLOCKIO, "bytes"),
            total(m, &s, BLOCKIO, "requests"),
            total(m, &s, BLOCKIO, "bytes"),
            p99(&s),
        ]);
    }
    rows
}
