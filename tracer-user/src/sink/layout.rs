//! Names in a run directory, shared by the writer, `recover`, `ship` and the readers:
//!
//! ```text
//! DIR/run.json
//! DIR/<table>/part-00000003.parquet            sealed: the table's rows of period 3
//! DIR/<table>/.part-00000004.parquet.inprogress being sealed (never read; removed on failure)
//! DIR/.wal/00000004.wal                         the write-ahead log of period 4 (all tables)
//! DIR/.wal/lock                                 held (flock) by the run writing DIR
//! DIR/.shipped                                  objects already uploaded (`--ship`, `ship`)
//! ```
//!
//! Period numbers start at 1 and grow by one per rotation; the part of period N is made from
//! log N only, so a part and the log it came from are matched by number: readers take a table's
//! rows of period N from the part if it exists, else from the log. Legacy runs (`--flush-every`)
//! number each table's parts on their own and have no log.

use std::{
    fs,
    path::{Path, PathBuf},
};

pub const WAL_DIR: &str = ".wal";
pub const LOCK: &str = "lock";
pub const SHIPPED: &str = ".shipped";
pub const INPROGRESS: &str = ".inprogress";

pub fn part_name(seq: u32) -> String {
    format!("part-{seq:08}.parquet")
}

/// The hidden name a part is written under until it is complete.
pub fn tmp_name(seq: u32) -> String {
    format!(".{}{INPROGRESS}", part_name(seq))
}

pub fn wal_name(seq: u32) -> String {
    format!("{seq:08}.wal")
}

/// The number of a part (`part-00000003.parquet` → 3).
pub fn part_seq(name: &str) -> Option<u32> {
    name.strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

/// The number of a log (`00000003.wal` → 3).
pub fn wal_seq(name: &str) -> Option<u32> {
    name.strip_suffix(".wal")?.parse().ok()
}

/// The logs of a run, oldest first.
pub fn wals(root: &Path) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = fs::read_dir(root.join(WAL_DIR))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let seq = wal_seq(&e.file_name().to_string_lossy())?;
                    Some((seq, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The visible Parquet files of a table directory, in name order (write order).
pub fn parts(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .is_some_and(|n| !n.starts_with('.') && n.ends_with(".parquet"))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Files left half-written by a run that was killed while sealing (or writing a legacy part).
pub fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let dir = entry.path();
        if !dir.is_dir() || entry.file_name() == WAL_DIR {
            continue;
        }
        for f in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(INPROGRESS) {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_write_order() {
        assert_eq!(part_name(3), "part-00000003.parquet");
        assert_eq!(part_seq(&part_name(3)), Some(3));
        assert_eq!(tmp_name(3), ".part-00000003.parquet.inprogress");
        assert_eq!(part_seq(&tmp_name(3)), None);
        assert_eq!(wal_seq(&wal_name(12)), Some(12));
        assert_eq!(wal_seq("lock"), None);
        assert!(part_name(9) < part_name(10));
        assert!(wal_name(99_999_999) > wal_name(10));
    }
}
