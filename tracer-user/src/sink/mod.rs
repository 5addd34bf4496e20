//! The sink: where every interval's rows go, so that a run of hours on every host of a cloud
//! makes few large files and loses nothing but the interval in progress.
//!
//! - **Write-ahead log.** Each interval's rows, for every table, are appended to the period's log
//!   (`DIR/.wal/N.wal`, [`wal`]: Arrow IPC messages in one zstd stream) and committed at the
//!   interval's end. The commit is a `write` to the file: a `kill -9` after it loses nothing of
//!   that interval; readers (`summary`, `diff`, `recover`) see a group only with its commit
//!   record, so the interval in progress is in every table or in none. A helper thread
//!   fdatasyncs the log at most once per `--sync-every` (default 1 s): a power loss or kernel
//!   crash loses at most that much more. One log for all tables keeps that to one fsync.
//! - **Periods and sealing.** Every `--rotate` (default 10 min) or once the log reaches
//!   `--rotate-size` (default 128 MiB), the log is closed and a second thread seals it ([`seal`])
//!   into one zstd Parquet file per table — rows in interval order, row groups of many
//!   intervals, page statistics, delta encoding for integers and timestamps, the run's metadata
//!   in the footer — written under a hidden name, fsync'd, renamed into place, the directory
//!   fsync'd; then the log is deleted. A crash in between is repaired by `scalp-bpf recover`,
//!   which seals what is left and skips parts already in place. The last period is sealed when
//!   the run ends, with `run_end` in its footers.
//! - **Shipping.** With `--ship URL`, a third thread uploads each part once sealed ([`ship`]).
//! - **Failures.** A write error (full disk, removed directory) stops the run with exit 7: the
//!   committed intervals stay in the log, sealed if the disk allows, else by `recover` later.
//!   A sink dropped without `finish` does the same (its `Drop` runs [`Sink::abandon`]).
//!
//! `--flush-every` keeps the older layout ([`parts`]: a part per table every flush) for
//! comparison; it is deprecated.

pub mod background;
pub mod budget;
pub mod error;
pub mod layout;
pub mod metadata;
pub mod output;
mod parts;
mod periods;
pub mod seal;
pub mod ship;
pub mod wal;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
pub use error::SinkError;
pub use periods::PeriodOptions;
use url::Url;

/// How a run's files are laid out.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// A write-ahead log, sealed into a Parquet file per table per period (the default).
    Periods(PeriodOptions),
    /// A Parquet part per table every `flush_every` (deprecated: `--flush-every`).
    Parts { flush_every: Duration },
}

#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub interval: Duration,
    pub layout: Layout,
    /// `--ship URL`: upload each part once sealed.
    pub ship: Option<Url>,
}

/// How long the end of a run waits for uploads still failing.
const SHIP_WAIT: Duration = Duration::from_secs(30);
/// The same after a write error: the run is stopping anyway.
const SHIP_WAIT_FAILED: Duration = Duration::from_secs(5);
/// Room kept for a part's footer (schema and run metadata) when projecting sizes.
const FOOTER_BYTES: u64 = 8 << 10;

enum Backend {
    // Boxed: one sink per run, and the log's state is much larger than the legacy layout's.
    Periods(Box<periods::Logged>),
    Parts(parts::Parts),
}

/// Every table of a run.
pub struct Sink {
    root: PathBuf,
    backend: Backend,
    shipper: Option<ship::Shipper>,
    done: bool,
}

impl Sink {
    pub fn new(
        root: &Path,
        schemas: Vec<(&'static str, SchemaRef)>,
        key_values: &[(String, String)],
        opts: SinkOptions,
    ) -> Result<Sink, SinkError> {
        let backend = match opts.layout {
            Layout::Periods(p) => Backend::Periods(Box::new(periods::Logged::new(
                root,
                schemas,
                key_values,
                p,
                opts.interval,
            )?)),
            Layout::Parts { flush_every } => Backend::Parts(parts::Parts::new(
                root,
                schemas,
                key_values,
                flush_every,
                opts.interval,
            )?),
        };
        let shipper = match &opts.ship {
            Some(url) => Some(ship::Shipper::start(root, url)?),
            None => None,
        };
        Ok(Sink {
            root: root.to_owned(),
            backend,
            shipper,
            done: false,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Adds rows of `table` to the interval in progress.
    pub fn write(&mut self, table: &str, batch: &RecordBatch) -> Result<(), SinkError> {
        match &mut self.backend {
            Backend::Periods(b) => b.write(table, batch),
            Backend::Parts(b) => b.write(table, batch),
        }
    }

    /// The end of an interval (called once per interval): commits its rows, syncs and ends the
    /// period when due, hands sealed parts to the shipper.
    pub fn rotate_if_due(&mut self) -> Result<(), SinkError> {
        match &mut self.backend {
            Backend::Periods(b) => {
                b.end_interval()?;
                self.ship_sealed();
                Ok(())
            }
            Backend::Parts(b) => b.end_interval(),
        }
    }

    fn ship_sealed(&mut self) {
        if let Backend::Periods(b) = &mut self.backend {
            let parts = b.take_sealed();
            if let Some(s) = &self.shipper {
                for p in parts {
                    s.submit(p.path);
                }
            }
        }
    }

    /// The end of the run: every row in a sealed part (`extra` key-values in the last footers),
    /// a part for every table, uploads finished or reported.
    pub fn finish(&mut self, extra: &[(String, String)]) -> Result<(), SinkError> {
        let result = match &mut self.backend {
            Backend::Periods(b) => b.finish(extra),
            Backend::Parts(b) => b.finish(extra),
        };
        if result.is_ok() {
            self.done = true;
        }
        self.finish_shipping(if result.is_ok() {
            SHIP_WAIT
        } else {
            SHIP_WAIT_FAILED
        });
        result
    }

    fn finish_shipping(&mut self, wait: Duration) {
        self.ship_sealed();
        let Some(shipper) = self.shipper.take() else {
            return;
        };
        let report = shipper.finish(wait);
        let sent = report.uploaded + report.present;
        if report.failed.is_empty() {
            eprintln!("scalp-bpf: shipped {sent} files to {}", report.url);
        } else {
            let last = report.failed.last().map_or("", |(_, e)| e.as_str());
            eprintln!(
                "scalp-bpf: {} of {} files not shipped to {} ({last}); they stay in {}: `scalp-bpf ship {} {}` uploads them",
                report.failed.len(),
                sent + report.failed.len(),
                report.url,
                self.root.display(),
                self.root.display(),
                report.url,
            );
        }
    }

    /// After a write error: the interval in progress is dropped; what was committed stays
    /// readable (sealed if the disk allows, else in the log for `recover`); no half file stays.
    pub fn abandon(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        match &mut self.backend {
            Backend::Periods(b) => b.abandon(),
            Backend::Parts(b) => b.abandon(),
        }
        self.finish_shipping(SHIP_WAIT_FAILED);
    }

    /// Bytes the output takes, projected to what the data written so far will take once sealed
    /// (for `--max-size`).
    pub fn bytes(&self) -> u64 {
        match &self.backend {
            Backend::Periods(b) => b.bytes(),
            Backend::Parts(b) => b.bytes(),
        }
    }

    /// Bytes that `finish` may add beyond [`Sink::bytes`]: the footers of one more part per
    /// table at most.
    pub fn finish_reserve(&self) -> u64 {
        let tables = match &self.backend {
            Backend::Periods(b) => b.tables(),
            Backend::Parts(b) => b.tables(),
        };
        tables as u64 * FOOTER_BYTES
    }

    /// (table, parts, rows) for the exit summary.
    pub fn stats(&self) -> Vec<(&'static str, u32, u64)> {
        match &self.backend {
            Backend::Periods(b) => b.stats(),
            Backend::Parts(b) => b.stats(),
        }
    }
}

impl Drop for Sink {
    /// A sink dropped unfinished (an early return, a panic) abandons: what was committed stays,
    /// sealed or in the log, and no hidden half-written part stays behind.
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use parquet::file::reader::{FileReader as _, SerializedFileReader};

    use super::*;
    use crate::sink::wal::tests::{batch, schema, scratch};

    fn sink(root: &Path, rotate: Duration) -> Sink {
        let opts = SinkOptions {
            interval: Duration::ZERO,
            layout: Layout::Periods(PeriodOptions {
                rotate,
                rotate_size: 0,
                sync_every: Duration::ZERO,
            }),
            ship: None,
        };
        let kv = vec![("scalp.host".to_owned(), "h".to_owned())];
        Sink::new(root, vec![("a", schema()), ("b", schema())], &kv, opts).unwrap()
    }

    /// (file name, rows) of a table's parts.
    fn parts(root: &Path, table: &str) -> Vec<(String, i64)> {
        layout::parts(&root.join(table))
            .iter()
            .map(|p| {
                let r = SerializedFileReader::new(fs::File::open(p).unwrap()).unwrap();
                let n = r.metadata().file_metadata().num_rows();
                (p.file_name().unwrap().to_string_lossy().into_owned(), n)
            })
            .collect()
    }

    /// Hidden files anywhere under root.
    fn hidden(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_owned()];
        while let Some(d) = dirs.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    out.push(e.path());
                }
                if e.path().is_dir() {
                    dirs.push(e.path());
                }
            }
        }
        out
    }

    #[test]
    fn a_run_makes_one_part_per_table_per_period_and_leaves_nothing_hidden() {
        let root = scratch("sink-finish");
        let mut s = sink(&root, Duration::from_secs(3600));
        for i in 0..4 {
            s.write("a", &batch(i * 3, 3)).unwrap();
            s.rotate_if_due().unwrap();
        }
        assert!(s.bytes() > 0);
        s.finish(&[("scalp.run_end".to_owned(), "end".to_owned())])
            .unwrap();
        assert_eq!(
            parts(&root, "a"),
            vec![("part-00000001.parquet".to_owned(), 12)]
        );
        // b got no rows: one empty part, so that readers find its schema.
        assert_eq!(
            parts(&root, "b"),
            vec![("part-00000001.parquet".to_owned(), 0)]
        );
        assert_eq!(s.stats(), vec![("a", 1, 12), ("b", 1, 0)]);
        assert!(hidden(&root).is_empty(), "{:?}", hidden(&root));
        drop(s);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn every_period_is_sealed_in_the_background_and_numbered_by_its_log() {
        let root = scratch("sink-rotate");
        let mut s = sink(&root, Duration::from_nanos(1));
        for i in 0..5 {
            s.write("a", &batch(i, 2)).unwrap();
            s.write("b", &batch(i, 1)).unwrap();
            s.rotate_if_due().unwrap();
        }
        s.finish(&[]).unwrap();
        let names: Vec<(String, i64)> = (1..=5).map(|i| (layout::part_name(i), 2)).collect();
        assert_eq!(parts(&root, "a"), names);
        assert_eq!(parts(&root, "b").len(), 5);
        assert!(hidden(&root).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_sink_dropped_unfinished_keeps_every_committed_interval_and_no_half_file() {
        let root = scratch("sink-drop");
        let mut s = sink(&root, Duration::from_secs(3600));
        s.write("a", &batch(0, 3)).unwrap();
        s.rotate_if_due().unwrap();
        s.write("a", &batch(3, 3)).unwrap();
        s.rotate_if_due().unwrap();
        // The interval in progress when the sink goes away: not committed, so not kept.
        s.write("a", &batch(6, 3)).unwrap();
        drop(s);
        assert_eq!(
            parts(&root, "a"),
            vec![("part-00000001.parquet".to_owned(), 6)]
        );
        assert!(hidden(&root).is_empty(), "{:?}", hidden(&root));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_removed_output_directory_is_noticed_at_the_next_interval_end() {
        let root = scratch("sink-removed");
        let mut s = sink(&root, Duration::from_secs(3600));
        s.write("a", &batch(0, 3)).unwrap();
        s.rotate_if_due().unwrap();
        fs::remove_dir_all(&root).unwrap();
        s.write("a", &batch(3, 3)).unwrap();
        match s.rotate_if_due() {
            Err(SinkError::Removed { dir }) => assert_eq!(dir, root),
            other => panic!("{other:?}"),
        }
        s.abandon();
        assert!(!root.exists());
    }

    #[test]
    fn the_legacy_layout_closes_a_part_per_table_every_flush() {
        let root = scratch("sink-legacy");
        let opts = SinkOptions {
            interval: Duration::ZERO,
            layout: Layout::Parts {
                flush_every: Duration::from_nanos(1),
            },
            ship: None,
        };
        let mut s = Sink::new(&root, vec![("a", schema())], &[], opts).unwrap();
        for i in 0..3 {
            s.write("a", &batch(i, 1)).unwrap();
            s.rotate_if_due().unwrap();
        }
        s.finish(&[]).unwrap();
        assert_eq!(parts(&root, "a").len(), 3);
        assert!(hidden(&root).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }
}
