//! Sealing: a period's log becomes one zstd Parquet file per table, each written under a hidden
//! name, fsync'd, renamed into place and its directory fsync'd; only then is the log deleted.
//! A part that exists already (sealed before a crash) is left as it is, so sealing a log twice
//! — `recover` after a kill in the middle of a seal — writes nothing twice. `recover` is sealing
//! every log a run left, plus removing hidden files a killed seal left behind.

use std::{
    fs::{self, File},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, Encoding, ZstdLevel},
    file::{
        metadata::{KeyValue, SortingColumn},
        properties::WriterProperties,
    },
    schema::types::ColumnPath,
};

use super::{
    error::{CountedFile, SinkError, sync_dir},
    layout,
    wal::{OpenError, Tail, WalReader},
};

const PAGE_BYTES: usize = 128 << 10;
/// Rows per row group: many intervals (a busy service makes a few hundred rows per interval);
/// and at most this many bytes, which bounds what a seal holds in memory per table.
const ROW_GROUP_ROWS: usize = 256 << 10;
const ROW_GROUP_BYTES: usize = 16 << 20;

/// Writer settings for a table: zstd; delta encoding for integer and timestamp columns (they
/// are counters and near-monotonic times); dictionaries for strings; statistics per page (the
/// default); declared sorted by `interval_start` where the table has it (rows are appended in
/// interval order).
pub fn properties(schema: &SchemaRef, key_values: &[(String, String)]) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        // A seal writes every table of a period at once: pages of 128 KiB (not 1 MiB) keep the
        // encoded-but-not-yet-compressed data of ~20 columns × 8 tables small.
        .set_data_page_size_limit(PAGE_BYTES)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_key_value_metadata(Some(
            key_values
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect(),
        ))
        .set_created_by(format!("scalp-bpf {}", env!("CARGO_PKG_VERSION")));
    for field in schema.fields() {
        if matches!(
            field.data_type(),
            DataType::Int32 | DataType::Int64 | DataType::Timestamp(_, _)
        ) {
            let path = ColumnPath::from(field.name().as_str());
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
        }
    }
    if let Ok(i) = schema.index_of("interval_start") {
        props = props.set_sorting_columns(Some(vec![SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        }]));
    }
    props.build()
}

/// `base` with the keys of `extra` replaced (or added).
pub fn merge_kv(base: &[(String, String)], extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut kv: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .cloned()
        .collect();
    kv.extend(extra.iter().cloned());
    kv
}

/// A part that was put in place.
#[derive(Clone, Debug)]
pub struct PartInfo {
    pub table: String,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// A Parquet file being written under its hidden name; removed unless closed.
pub struct PartWriter {
    writer: Option<ArrowWriter<CountedFile>>,
    errno: std::sync::Arc<std::sync::atomic::AtomicI32>,
    root: PathBuf,
    table: String,
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
}

impl PartWriter {
    pub fn create(
        root: &Path,
        table: &str,
        seq: u32,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<PartWriter, SinkError> {
        let dir = root.join(table);
        let tmp = dir.join(layout::tmp_name(seq));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| SinkError::io(root, &tmp, e))?;
        let file = CountedFile::new(file);
        let errno = file.errno.clone();
        let writer = match ArrowWriter::try_new(file, schema, Some(props)) {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(SinkError::parquet(root, &tmp, e, &errno));
            }
        };
        Ok(PartWriter {
            writer: Some(writer),
            errno,
            root: root.to_owned(),
            table: table.to_owned(),
            path: dir.join(layout::part_name(seq)),
            tmp,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        w.write(batch)
            .map_err(|e| SinkError::parquet(&self.root, &self.tmp, e, &self.errno))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Bytes the part will take once closed (the buffered row group as estimated).
    pub fn size(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| (w.bytes_written() + w.in_progress_size()) as u64)
    }

    /// Footer (with `extra` key-values), fsync, rename into place, fsync of the directory. On
    /// failure the hidden file is removed.
    pub fn close(mut self, extra: &[(String, String)]) -> Result<PartInfo, SinkError> {
        let Some(writer) = self.writer.take() else {
            return Err(SinkError::Thread("part closed twice".to_owned()));
        };
        let result = self.complete(writer, extra);
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }

    fn complete(
        &self,
        mut writer: ArrowWriter<CountedFile>,
        extra: &[(String, String)],
    ) -> Result<PartInfo, SinkError> {
        for (k, v) in extra {
            writer.append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
        }
        let file = writer
            .into_inner()
            .map_err(|e| SinkError::parquet(&self.root, &self.tmp, e, &self.errno))?;
        let io = |path: &Path| {
            let path = path.to_owned();
            let root = self.root.clone();
            move |e| SinkError::io(&root, &path, e)
        };
        file.file.sync_all().map_err(io(&self.tmp))?;
        fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        let dir = self.path.parent().unwrap_or(&self.root).to_owned();
        sync_dir(&dir).map_err(io(&dir))?;
        Ok(PartInfo {
            table: self.table.clone(),
            path: self.path.clone(),
            rows: self.rows,
            bytes: file.written,
        })
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// What sealing one log did.
#[derive(Debug, Default)]
pub struct Sealed {
    pub parts: Vec<PartInfo>,
    /// What followed the log's last commit (dropped).
    pub tail: Tail,
    /// Bytes of the log that was sealed (and deleted).
    pub log_bytes: u64,
    /// Interval groups the log held.
    pub commits: u64,
}

pub struct SealOptions<'a> {
    /// Key-values that replace the log's own in the footers (`run_end` at the end of a run).
    pub extra: &'a [(String, String)],
    /// Give a table that has no part at all an empty one, so that readers find its schema (the
    /// last log of a run).
    pub schema_parts: bool,
}

/// Seals log `seq` of the run in `root` into its parts, then deletes it. On failure the parts
/// begun are removed and the log stays, to be sealed again.
pub fn seal(root: &Path, seq: u32, log: &Path, opts: &SealOptions) -> Result<Sealed, SinkError> {
    let file = File::open(log).map_err(|e| SinkError::io(root, log, e))?;
    let log_bytes = file.metadata().map_or(0, |m| m.len());
    let mut sealed = Sealed {
        log_bytes,
        ..Sealed::default()
    };
    let mut reader = match WalReader::open(file) {
        Ok(r) => r,
        Err(OpenError::Empty) => {
            sealed.tail.torn = log_bytes > 0;
            delete_log(root, log)?;
            return Ok(sealed);
        }
        Err(OpenError::Corrupt(reason)) => {
            return Err(SinkError::Corrupt {
                path: log.to_owned(),
                reason,
            });
        }
        Err(OpenError::Io(e)) => return Err(SinkError::io(root, log, e)),
    };
    let tables: Vec<(String, SchemaRef)> = reader.tables().to_vec();
    let base = reader.meta().to_vec();
    let props = |t: &str, schema: &SchemaRef| {
        let mut kv = merge_kv(&base, opts.extra);
        kv.push(("scalp.table".to_owned(), t.to_owned()));
        kv.push(("scalp.period".to_owned(), seq.to_string()));
        properties(schema, &kv)
    };
    // A table whose part exists was sealed before (a seal cut short): skip it.
    let todo: Vec<bool> = tables
        .iter()
        .map(|(t, _)| !root.join(t).join(layout::part_name(seq)).exists())
        .collect();
    let mut writers: Vec<Option<PartWriter>> = tables.iter().map(|_| None).collect();
    while let Some(group) = reader.next_group() {
        for (t, batch) in group {
            if !todo[t] || batch.num_rows() == 0 {
                continue;
            }
            let w = match &mut writers[t] {
                Some(w) => w,
                slot => {
                    let (name, schema) = &tables[t];
                    ensure_dir(root, name)?;
                    slot.insert(PartWriter::create(
                        root,
                        name,
                        seq,
                        schema.clone(),
                        props(name, schema),
                    )?)
                }
            };
            w.write(&batch)?;
        }
    }
    sealed.tail = reader.tail();
    sealed.commits = reader.commits();
    for (t, (name, schema)) in tables.iter().enumerate() {
        let writer = match writers[t].take() {
            Some(w) => Some(w),
            None if todo[t] && opts.schema_parts && layout::parts(&root.join(name)).is_empty() => {
                ensure_dir(root, name)?;
                let mut w =
                    PartWriter::create(root, name, seq, schema.clone(), props(name, schema))?;
                w.write(&RecordBatch::new_empty(schema.clone()))?;
                Some(w)
            }
            None => None,
        };
        if let Some(w) = writer {
            sealed.parts.push(w.close(&[])?);
        }
    }
    delete_log(root, log)?;
    Ok(sealed)
}

fn ensure_dir(root: &Path, table: &str) -> Result<(), SinkError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = root.join(table);
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .map_err(|e| SinkError::io(root, &dir, e))
}

fn delete_log(root: &Path, log: &Path) -> Result<(), SinkError> {
    fs::remove_file(log).map_err(|e| SinkError::io(root, log, e))?;
    let dir = log.parent().unwrap_or(root);
    sync_dir(dir).map_err(|e| SinkError::io(root, dir, e))
}

/// The lock a run holds on its log directory while it writes: `recover` must not seal a log
/// that a live run is appending to. An flock is released by the kernel when its holder dies,
/// `kill -9` included.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock, or says it is held (`Ok(None)`).
    pub fn try_take(root: &Path) -> Result<Option<RunLock>, SinkError> {
        let path = root.join(layout::WAL_DIR).join(layout::LOCK);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SinkError::io(root, &path, e))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Some(RunLock { _file: file }));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        Err(SinkError::io(root, &path, e))
    }
}

/// What `recover` did.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Hidden, half-written parts removed.
    pub removed: Vec<PathBuf>,
    /// Logs sealed: (period, what sealing it did).
    pub logs: Vec<(u32, Sealed)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{dir} is being written by a running scalp-bpf (recover it once that run has ended)")]
    Live { dir: PathBuf },
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Seals every log a run left and removes half-written parts. Idempotent: a run with nothing
/// left to seal is left as it is.
pub fn recover(root: &Path) -> Result<Recovered, RecoverError> {
    let mut done = Recovered::default();
    let wal_dir = root.join(layout::WAL_DIR);
    let _lock = if wal_dir.is_dir() {
        Some(RunLock::try_take(root)?.ok_or_else(|| RecoverError::Live {
            dir: root.to_owned(),
        })?)
    } else {
        None
    };
    for tmp in layout::leftovers(root) {
        fs::remove_file(&tmp).map_err(|e| SinkError::io(root, &tmp, e))?;
        if let Some(dir) = tmp.parent() {
            sync_dir(dir).map_err(|e| SinkError::io(root, dir, e))?;
        }
        done.removed.push(tmp);
    }
    let logs = layout::wals(root);
    let last = logs.last().map(|(seq, _)| *seq);
    for (seq, path) in logs {
        let opts = SealOptions {
            extra: &[],
            schema_parts: Some(seq) == last,
        };
        done.logs.push((seq, seal(root, seq, &path, &opts)?));
    }
    if wal_dir.is_dir() {
        let _ = fs::remove_file(wal_dir.join(layout::LOCK));
        if fs::remove_dir(&wal_dir).is_ok() {
            sync_dir(root).map_err(|e| SinkError::io(root, root, e))?;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};

    use super::*;
    use crate::sink::wal::{
        WalWriter,
        tests::{batch, schema, scratch},
    };

    /// A run directory with log `seq` holding `groups` commits of tables a (2 rows each) and
    /// b (1 row each).
    fn killed_run(name: &str, seq: u32, groups: i64) -> PathBuf {
        let root = scratch(name);
        fs::create_dir_all(root.join(layout::WAL_DIR)).unwrap();
        let path = root.join(layout::WAL_DIR).join(layout::wal_name(seq));
        let kv = vec![("scalp.host".to_owned(), "h".to_owned())];
        let mut w = WalWriter::create(&path, &kv, &[("a", schema()), ("b", schema())]).unwrap();
        for g in 0..groups {
            w.append(0, &batch(g * 2, 2)).unwrap();
            w.append(1, &batch(g, 1)).unwrap();
            w.commit().unwrap();
        }
        drop(w.close());
        root
    }

    fn rows(path: &Path) -> (i64, Vec<(String, String)>) {
        let r = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let kv = r
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kv| {
                kv.iter()
                    .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        (r.metadata().file_metadata().num_rows(), kv)
    }

    #[test]
    fn a_seal_makes_one_part_per_table_and_deletes_the_log() {
        let root = killed_run("seal", 1, 5);
        let log = root.join(layout::WAL_DIR).join(layout::wal_name(1));
        let extra = vec![("scalp.run_end".to_owned(), "end".to_owned())];
        let sealed = seal(
            &root,
            1,
            &log,
            &SealOptions {
                extra: &extra,
                schema_parts: true,
            },
        )
        .unwrap();
        assert!(!log.exists());
        assert_eq!(sealed.commits, 5);
        assert!(!sealed.tail.dropped());
        let (a_rows, kv) = rows(&root.join("a").join(layout::part_name(1)));
        assert_eq!(a_rows, 10);
        assert_eq!(rows(&root.join("b").join(layout::part_name(1))).0, 5);
        for (k, v) in [
            ("scalp.host", "h"),
            ("scalp.table", "a"),
            ("scalp.run_end", "end"),
        ] {
            assert!(
                kv.contains(&(k.to_owned(), v.to_owned())),
                "{k} missing: {kv:?}"
            );
        }
        assert!(layout::leftovers(&root).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn recover_seals_what_a_kill_left_once_and_skips_parts_already_sealed() {
        let root = killed_run("recover", 3, 4);
        // A kill in the middle of sealing: a's part is in place, b's was half-written.
        let log = root.join(layout::WAL_DIR).join(layout::wal_name(3));
        let bytes = fs::read(&log).unwrap();
        fs::create_dir_all(root.join("a")).unwrap();
        fs::create_dir_all(root.join("b")).unwrap();
        seal(
            &root,
            3,
            &log,
            &SealOptions {
                extra: &[],
                schema_parts: false,
            },
        )
        .unwrap();
        fs::remove_file(root.join("b").join(layout::part_name(3))).unwrap();
        fs::write(root.join("b").join(layout::tmp_name(3)), b"half a part").unwrap();
        let a_before = fs::metadata(root.join("a").join(layout::part_name(3))).unwrap();
        // The log, its last chunk cut by the kill.
        fs::create_dir_all(root.join(layout::WAL_DIR)).unwrap();
        let mut cut = bytes.clone();
        cut.extend(&bytes[bytes.len() - 40..bytes.len() - 10]);
        fs::write(&log, &cut).unwrap();

        let done = recover(&root).unwrap();
        assert_eq!(done.removed, vec![root.join("b").join(layout::tmp_name(3))]);
        let [(3, sealed)] = &done.logs[..] else {
            panic!("{:?}", done.logs)
        };
        assert_eq!(sealed.tail.torn_bytes, 30);
        assert_eq!(
            sealed.parts.len(),
            1,
            "a's part was sealed before: not again"
        );
        assert_eq!(rows(&root.join("b").join(layout::part_name(3))).0, 4);
        let a_after = fs::metadata(root.join("a").join(layout::part_name(3))).unwrap();
        assert_eq!(a_before.modified().unwrap(), a_after.modified().unwrap());
        assert!(!root.join(layout::WAL_DIR).exists());

        let again = recover(&root).unwrap();
        assert!(again.logs.is_empty() && again.removed.is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn recover_refuses_a_run_that_is_still_writing() {
        let root = killed_run("recover-live", 1, 1);
        let lock = RunLock::try_take(&root).unwrap().expect("free");
        assert!(matches!(recover(&root), Err(RecoverError::Live { .. })));
        drop(lock);
        assert_eq!(recover(&root).unwrap().logs.len(), 1);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_log_killed_before_its_first_commit_is_removed_as_empty() {
        let root = scratch("recover-empty");
        fs::create_dir_all(root.join(layout::WAL_DIR)).unwrap();
        fs::write(
            root.join(layout::WAL_DIR).join(layout::wal_name(1)),
            b"SCALPW",
        )
        .unwrap();
        let done = recover(&root).unwrap();
        assert!(done.logs[0].1.tail.torn && done.logs[0].1.parts.is_empty());
        assert!(!root.join(layout::WAL_DIR).exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_foreign_file_in_the_log_directory_is_an_error_not_a_loss() {
        let root = scratch("recover-foreign");
        fs::create_dir_all(root.join(layout::WAL_DIR)).unwrap();
        let log = root.join(layout::WAL_DIR).join(layout::wal_name(1));
        fs::write(&log, b"PAR1 not a log at all").unwrap();
        let e = recover(&root).unwrap_err().to_string();
        assert!(e.contains("not a scalp-bpf write-ahead log"), "{e}");
        assert!(log.exists(), "kept for a human to look at");
        fs::remove_dir_all(&root).unwrap();
    }
}
