//! The default layout: every interval's rows go to the period's write-ahead log (one file for
//! all tables, fsync'd at most once per `--sync-every` by the syncer thread), and each period
//! (`--rotate`, or `--rotate-size` of log) is sealed into one Parquet file per table by the
//! sealer thread. See the module docs of [`super::wal`] and [`super::seal`].

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::{
    background::{Sealer, Syncer},
    error::{SinkError, sync_dir},
    layout,
    seal::{self, PartInfo, RunLock, SealOptions, Sealed},
    wal::{WalError, WalWriter},
};

/// How periods end and how often the log is made durable.
#[derive(Clone, Copy, Debug)]
pub struct PeriodOptions {
    pub rotate: Duration,
    /// Bytes of log that end a period early (0: no limit).
    pub rotate_size: u64,
    pub sync_every: Duration,
}

pub struct Logged {
    root: PathBuf,
    wal_dir: PathBuf,
    names: Vec<&'static str>,
    schemas: Vec<SchemaRef>,
    kv: Vec<(String, String)>,
    opts: PeriodOptions,
    /// Rotations happen at interval ends: one due within half an interval is due now.
    slack: Duration,
    wal: Option<WalWriter>,
    seq: u32,
    period_start: Instant,
    last_sync: Instant,
    /// Commits since the last sync request.
    unsynced: bool,
    rows: Vec<u64>,
    parts: Vec<u32>,
    sealed_bytes: u64,
    /// Parquet bytes per log byte, learned from the seals so far (for `--max-size`).
    sealed_log_bytes: u64,
    syncer: Syncer,
    sealer: Sealer,
    /// Parts sealed since the last [`Logged::take_sealed`].
    fresh: Vec<PartInfo>,
    /// Finished or abandoned: nothing more is written.
    closed: bool,
    _lock: RunLock,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

fn wal_err(root: &Path, path: &Path, e: WalError) -> SinkError {
    match e {
        WalError::Io(e) => SinkError::io(root, path, e),
        WalError::Arrow(e) => SinkError::arrow(root, path, e),
    }
}

impl Logged {
    pub fn new(
        root: &Path,
        schemas: Vec<(&'static str, SchemaRef)>,
        kv: &[(String, String)],
        opts: PeriodOptions,
        interval: Duration,
    ) -> Result<Logged, SinkError> {
        let wal_dir = root.join(layout::WAL_DIR);
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e| SinkError::io(root, &p, e)
        };
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&wal_dir)
            .map_err(io(&wal_dir))?;
        for (t, _) in &schemas {
            let dir = root.join(t);
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&dir)
                .map_err(io(&dir))?;
        }
        let lock = RunLock::try_take(root)?.ok_or_else(|| SinkError::Io {
            path: wal_dir.clone(),
            source: std::io::Error::other("another scalp-bpf writes this directory"),
        })?;
        let n = schemas.len();
        let mut sink = Logged {
            root: root.to_owned(),
            names: schemas.iter().map(|(t, _)| *t).collect(),
            schemas: schemas.into_iter().map(|(_, s)| s).collect(),
            kv: kv.to_vec(),
            opts,
            slack: interval / 2,
            wal: None,
            seq: 0,
            period_start: Instant::now(),
            last_sync: Instant::now(),
            unsynced: false,
            rows: vec![0; n],
            parts: vec![0; n],
            sealed_bytes: 0,
            sealed_log_bytes: 0,
            syncer: Syncer::start().map_err(io(&wal_dir))?,
            sealer: Sealer::start(root).map_err(io(&wal_dir))?,
            fresh: Vec::new(),
            closed: false,
            _lock: lock,
            wal_dir,
        };
        sink.open_log()?;
        sink.sync_later(root)?;
        Ok(sink)
    }

    /// Asks the syncer to fsync a file or directory: starting a run or a period does not wait
    /// for the disk (a run must be tracing as soon as it says it is ready).
    fn sync_later(&self, path: &Path) -> Result<(), SinkError> {
        let file = fs::File::open(path).map_err(|e| SinkError::io(&self.root, path, e))?;
        self.syncer.request(path, file);
        Ok(())
    }

    /// Starts the next period's log; it and its directory entry are made durable by the syncer,
    /// like the rows that follow.
    fn open_log(&mut self) -> Result<(), SinkError> {
        self.seq += 1;
        let path = self.wal_dir.join(layout::wal_name(self.seq));
        let mut kv = self.kv.clone();
        kv.push(("scalp.period_start".to_owned(), now_rfc3339()));
        let tables: Vec<(&str, SchemaRef)> = self
            .names
            .iter()
            .copied()
            .zip(self.schemas.iter().cloned())
            .collect();
        let wal = WalWriter::create(&path, &kv, &tables).map_err(|e| {
            let _ = fs::remove_file(&path);
            wal_err(&self.root, &path, e)
        })?;
        self.sync_later(&path)?;
        self.sync_later(&self.wal_dir.clone())?;
        self.wal = Some(wal);
        self.period_start = Instant::now();
        Ok(())
    }

    fn index(&self, table: &str) -> usize {
        self.names
            .iter()
            .position(|t| *t == table)
            .unwrap_or_else(|| panic!("table {table} is not registered with the sink"))
    }

    pub fn write(&mut self, table: &str, batch: &RecordBatch) -> Result<(), SinkError> {
        let t = self.index(table);
        let Some(wal) = self.wal.as_mut() else {
            return Err(SinkError::Thread("the sink is closed".to_owned()));
        };
        wal.append(t, batch)
            .map_err(|e| wal_err(&self.root, wal.path(), e))?;
        self.rows[t] += batch.num_rows() as u64;
        Ok(())
    }

    /// The interval's end: commit its rows, ask for a sync if one is due, end the period if due.
    pub fn end_interval(&mut self) -> Result<(), SinkError> {
        self.commit()?;
        self.collect_seals()?;
        if let Some((path, e)) = self.syncer.take_error() {
            return Err(SinkError::io(&self.root, &path, e));
        }
        // Syncs happen at interval ends, like rotations: one due within half an interval is due
        // now (else an interval as long as --sync-every would sync every other interval).
        if self.unsynced && self.last_sync.elapsed() + self.slack >= self.opts.sync_every {
            self.request_sync()?;
        }
        let size_due = self.opts.rotate_size > 0
            && self
                .wal
                .as_ref()
                .is_some_and(|w| w.bytes() >= self.opts.rotate_size);
        if size_due || self.period_start.elapsed() + self.slack >= self.opts.rotate {
            self.rotate()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), SinkError> {
        let Some(wal) = self.wal.as_mut() else {
            return Ok(());
        };
        wal.commit()
            .map_err(|e| wal_err(&self.root, wal.path(), e))?;
        self.unsynced = true;
        // Appends to a deleted file succeed: notice that the log (or the whole output) is gone.
        let meta = wal
            .file()
            .metadata()
            .map_err(|e| SinkError::io(&self.root, wal.path(), e))?;
        if meta.nlink() == 0 {
            if !self.root.is_dir() {
                return Err(SinkError::Removed {
                    dir: self.root.clone(),
                });
            }
            return Err(SinkError::LogDeleted {
                path: wal.path().to_owned(),
            });
        }
        Ok(())
    }

    fn request_sync(&mut self) -> Result<(), SinkError> {
        if let Some(wal) = &self.wal {
            let dup = wal
                .file()
                .try_clone()
                .map_err(|e| SinkError::io(&self.root, wal.path(), e))?;
            self.syncer.request(wal.path(), dup);
        }
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    /// Closes the period's log and hands it to the sealer; opens the next.
    fn rotate(&mut self) -> Result<(), SinkError> {
        let Some(wal) = self.wal.take() else {
            return Ok(());
        };
        let path = wal.path().to_owned();
        let bytes = wal.bytes();
        self.syncer.request(&path, wal.close());
        self.sealer.submit(self.seq, path, bytes)?;
        self.open_log()
    }

    fn note_sealed(&mut self, sealed: Sealed) {
        self.sealed_log_bytes += sealed.log_bytes;
        for p in sealed.parts {
            self.sealed_bytes += p.bytes;
            if let Some(t) = self.names.iter().position(|n| *n == p.table) {
                self.parts[t] += 1;
            }
            self.fresh.push(p);
        }
        if sealed.tail.dropped() {
            // A log the run closed itself ends with a commit: this would be a bug.
            tracing::warn!(?sealed.tail, "a sealed log had records after its last commit");
        }
    }

    fn collect_seals(&mut self) -> Result<(), SinkError> {
        let mut failure = None;
        for (_, result) in self.sealer.results() {
            match result {
                Ok(s) => self.note_sealed(s),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Parts sealed since the last call (for shipping).
    pub fn take_sealed(&mut self) -> Vec<PartInfo> {
        std::mem::take(&mut self.fresh)
    }

    /// The end of the run: commit, wait for earlier seals, seal the last log with `extra` in
    /// its footers (and an empty part for a table that has none), remove the log directory.
    pub fn finish(&mut self, extra: &[(String, String)]) -> Result<(), SinkError> {
        self.commit()?;
        let wal = self.wal.take();
        let mut failure = None;
        for (_, result) in self.sealer.stop() {
            match result {
                Ok(s) => self.note_sealed(s),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        self.syncer.stop();
        tracing::info!(fsyncs = self.syncs(), "write-ahead log: syncs of the run");
        let Some(wal) = wal else {
            return failure.map_or(Ok(()), Err);
        };
        let path = wal.path().to_owned();
        drop(wal.close());
        if let Some(e) = failure {
            return Err(e);
        }
        let opts = SealOptions {
            extra,
            schema_parts: true,
        };
        let sealed = seal::seal(&self.root, self.seq, &path, &opts)?;
        self.note_sealed(sealed);
        self.closed = true;
        let _ = fs::remove_file(self.wal_dir.join(layout::LOCK));
        fs::remove_dir(&self.wal_dir).map_err(|e| SinkError::io(&self.root, &self.wal_dir, e))?;
        sync_dir(&self.root).map_err(|e| SinkError::io(&self.root, &self.root, e))
    }

    /// After a failure (or when dropped unfinished): the interval in progress is dropped; what
    /// was committed is sealed if the disk allows, else stays in the log for `recover` (and is
    /// read by `summary` meanwhile). Leaves no half-written file.
    pub fn abandon(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // Dropped without a commit: its records are not part of the log.
        let wal = self.wal.take();
        drop(wal);
        for (_, result) in self.sealer.stop() {
            if let Ok(s) = result {
                self.note_sealed(s);
            }
        }
        self.syncer.stop();
        let mut all_sealed = true;
        for (seq, path) in layout::wals(&self.root) {
            let opts = SealOptions {
                extra: &[],
                schema_parts: seq == self.seq,
            };
            match seal::seal(&self.root, seq, &path, &opts) {
                Ok(s) => self.note_sealed(s),
                Err(_) => all_sealed = false,
            }
        }
        if all_sealed {
            let _ = fs::remove_file(self.wal_dir.join(layout::LOCK));
            if fs::remove_dir(&self.wal_dir).is_ok() {
                let _ = sync_dir(&self.root);
            }
        }
    }

    /// Bytes the output takes now, the logs counted twice (a log and the parts sealed from it
    /// coexist until the log is deleted), the second time at the size sealing has made of logs
    /// so far.
    pub fn bytes(&self) -> u64 {
        let open = self.wal.as_ref().map_or(0, WalWriter::bytes) + self.sealer.waiting_bytes();
        let ratio = if self.sealed_log_bytes > 0 {
            self.sealed_bytes as f64 / self.sealed_log_bytes as f64
        } else {
            1.0
        };
        self.sealed_bytes + open + (open as f64 * ratio.max(0.25)) as u64
    }

    pub fn tables(&self) -> usize {
        self.names.len()
    }

    pub fn stats(&self) -> Vec<(&'static str, u32, u64)> {
        self.names
            .iter()
            .zip(self.parts.iter().zip(&self.rows))
            .map(|(t, (p, r))| (*t, *p, *r))
            .collect()
    }

    /// fdatasync calls on logs so far.
    pub fn syncs(&self) -> u64 {
        self.syncer.calls()
    }
}
