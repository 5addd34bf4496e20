//! The Parquet sink: one directory per table, holding parts that are written to a hidden
//! temporary name and renamed into place only once closed (fsync of the file, rename, fsync of
//! the directory), so every visible `*.parquet` file is complete. Parts rotate every
//! `--flush-every` (by default every interval, so that a crash loses at most the interval in
//! progress); names sort in write order. A part that cannot be completed is removed: what is
//! visible stays readable.

pub mod budget;
pub mod metadata;
pub mod output;

use std::{
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, Encoding, ZstdLevel},
    errors::ParquetError,
    file::{metadata::KeyValue, properties::WriterProperties},
    schema::types::ColumnPath,
};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("no space left on the output's file system (writing {path})")]
    DiskFull { path: PathBuf },
    #[error("the output directory {dir} was removed")]
    Removed { dir: PathBuf },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
}

impl SinkError {
    /// Names the failure by its cause: a full file system, a removed directory, or the error.
    fn io(root: &Path, path: &Path, source: io::Error) -> SinkError {
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            return SinkError::DiskFull {
                path: path.to_owned(),
            };
        }
        let parent = path.parent().unwrap_or(root);
        for dir in [root, parent] {
            if !dir.is_dir() {
                return SinkError::Removed {
                    dir: dir.to_owned(),
                };
            }
        }
        SinkError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The Parquet writer reports I/O errors as text: the OS error its file saw says more.
    fn parquet(root: &Path, path: &Path, source: ParquetError, errno: &AtomicI32) -> SinkError {
        match errno.load(Ordering::Relaxed) {
            0 => SinkError::Parquet {
                path: path.to_owned(),
                source,
            },
            e => SinkError::io(root, path, io::Error::from_raw_os_error(e)),
        }
    }

    /// What the failure means for the run, to follow its message.
    pub fn consequence(&self) -> &'static str {
        match self {
            SinkError::Removed { .. } => "",
            _ => ", the parts closed before stay readable",
        }
    }
}

/// A part's file: keeps the first OS error of a write, counts bytes.
struct PartFile {
    file: File,
    written: u64,
    errno: Arc<AtomicI32>,
}

impl PartFile {
    fn note<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            let _ = self.errno.compare_exchange(
                0,
                e.raw_os_error().unwrap_or(libc::EIO),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        result
    }
}

impl Write for PartFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.file.write(buf);
        let n = self.note(result)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.file.flush();
        self.note(result)
    }
}

/// An open part: written under `tmp`, renamed to `path` when closed.
struct OpenPart {
    writer: ArrowWriter<PartFile>,
    errno: Arc<AtomicI32>,
    tmp: PathBuf,
    path: PathBuf,
}

impl OpenPart {
    /// Bytes it will take once closed (the buffered row group as estimated by the writer).
    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }
}

/// The parts of one table.
pub struct TableWriter {
    table: &'static str,
    root: PathBuf,
    dir: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    next_part: u32,
    open: Option<OpenPart>,
    rows: u64,
    /// Bytes of the parts closed so far.
    closed_bytes: u64,
}

/// Writer settings for a schema: zstd; delta encoding for integer and timestamp columns (they
/// are counters and near-monotonic times); dictionaries for strings.
fn properties(schema: &SchemaRef, key_values: &[(String, String)]) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
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
    props.build()
}

impl TableWriter {
    fn new(
        root: &Path,
        table: &'static str,
        schema: SchemaRef,
        kv: &[(String, String)],
    ) -> Result<Self, SinkError> {
        let dir = root.join(table);
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|source| SinkError::io(root, &dir, source))?;
        let mut kv = kv.to_vec();
        kv.push(("scalp.table".to_owned(), table.to_owned()));
        Ok(TableWriter {
            table,
            props: properties(&schema, &kv),
            root: root.to_owned(),
            dir,
            schema,
            next_part: 1,
            open: None,
            rows: 0,
            closed_bytes: 0,
        })
    }

    fn open_part(&mut self) -> Result<&mut OpenPart, SinkError> {
        if self.open.is_none() {
            let name = format!("part-{:08}.parquet", self.next_part);
            let path = self.dir.join(&name);
            let tmp = self.dir.join(format!(".{name}.inprogress"));
            let file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|source| SinkError::io(&self.root, &tmp, source))?;
            let errno = Arc::new(AtomicI32::new(0));
            let file = PartFile {
                file,
                written: 0,
                errno: errno.clone(),
            };
            let writer =
                match ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone())) {
                    Ok(writer) => writer,
                    Err(source) => {
                        let _ = fs::remove_file(&tmp);
                        return Err(SinkError::parquet(&self.root, &tmp, source, &errno));
                    }
                };
            self.next_part += 1;
            self.open = Some(OpenPart {
                writer,
                errno,
                tmp,
                path,
            });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Appends rows to the open part.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        let root = self.root.clone();
        let part = self.open_part()?;
        part.writer
            .write(batch)
            .map_err(|source| SinkError::parquet(&root, &part.tmp, source, &part.errno))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the open part (footer, fsync, rename into place, fsync of the directory). On
    /// failure the part is removed.
    pub fn close_part(&mut self, extra: &[(String, String)]) -> Result<(), SinkError> {
        let Some(part) = self.open.take() else {
            return Ok(());
        };
        let tmp = part.tmp.clone();
        match self.complete(part, extra) {
            Ok(bytes) => {
                self.closed_bytes += bytes;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Writes the footer and puts the part in place; returns its size.
    fn complete(&self, mut part: OpenPart, extra: &[(String, String)]) -> Result<u64, SinkError> {
        for (k, v) in extra {
            part.writer
                .append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
        }
        let file = part
            .writer
            .into_inner()
            .map_err(|source| SinkError::parquet(&self.root, &part.tmp, source, &part.errno))?;
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| SinkError::io(&self.root, &path, source)
        };
        file.file.sync_all().map_err(io_err(&part.tmp))?;
        fs::rename(&part.tmp, &part.path).map_err(io_err(&part.path))?;
        // The rename itself survives a power loss only once the directory is on disk too.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(file.written)
    }

    /// Bytes of the closed parts and of the open one once closed (estimated).
    fn size(&self) -> u64 {
        self.closed_bytes + self.open.as_ref().map_or(0, OpenPart::size)
    }

    /// Parts closed so far.
    pub fn parts(&self) -> u32 {
        self.next_part - 1 - u32::from(self.open.is_some())
    }

    /// Removes a part left open (after a failure), so no incomplete file stays behind.
    fn abandon(&mut self) {
        if let Some(part) = self.open.take() {
            drop(part.writer);
            let _ = fs::remove_file(&part.tmp);
        }
    }
}

/// Room kept for a part's footer (schema and run metadata) when projecting sizes.
const FOOTER_BYTES: u64 = 8 << 10;

/// Every table of a run.
pub struct Sink {
    root: PathBuf,
    tables: Vec<TableWriter>,
    flush_every: Duration,
    /// Rotations happen at interval ends: a rotation due within half an interval is due now.
    slack: Duration,
    last_rotation: Instant,
}

impl Sink {
    pub fn new(
        root: &Path,
        schemas: Vec<(&'static str, SchemaRef)>,
        key_values: &[(String, String)],
        flush_every: Duration,
        interval: Duration,
    ) -> Result<Sink, SinkError> {
        let tables = schemas
            .into_iter()
            .map(|(t, s)| TableWriter::new(root, t, s, key_values))
            .collect::<Result<_, _>>()?;
        Ok(Sink {
            root: root.to_owned(),
            tables,
            flush_every,
            slack: interval / 2,
            last_rotation: Instant::now(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn table_mut(&mut self, table: &str) -> &mut TableWriter {
        self.tables
            .iter_mut()
            .find(|t| t.table == table)
            .unwrap_or_else(|| panic!("table {table} is not registered with the sink"))
    }

    pub fn write(&mut self, table: &str, batch: &RecordBatch) -> Result<(), SinkError> {
        self.table_mut(table).write(batch)
    }

    /// Closes every open part once `--flush-every` has passed since the last rotation.
    pub fn rotate_if_due(&mut self) -> Result<(), SinkError> {
        if self.last_rotation.elapsed() + self.slack >= self.flush_every {
            self.rotate(&[])?;
        }
        Ok(())
    }

    /// Closes every open part now.
    pub fn rotate(&mut self, extra: &[(String, String)]) -> Result<(), SinkError> {
        self.last_rotation = Instant::now();
        for t in &mut self.tables {
            t.close_part(extra)?;
        }
        Ok(())
    }

    /// Closes every part; a table that got no rows gets one empty part so that readers find its
    /// schema.
    pub fn finish(&mut self, extra: &[(String, String)]) -> Result<(), SinkError> {
        for t in &mut self.tables {
            if t.parts() == 0 && t.open.is_none() {
                let empty = RecordBatch::new_empty(t.schema.clone());
                t.write(&empty)?;
            }
            t.close_part(extra)?;
        }
        Ok(())
    }

    /// After a write error: drop open parts so that only complete files remain.
    pub fn abandon(&mut self) {
        for t in &mut self.tables {
            t.abandon();
        }
    }

    /// Bytes the parts take, the open ones counted at the size they will have once closed
    /// (estimated).
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(TableWriter::size).sum()
    }

    /// Bytes that `finish` may add beyond [`Sink::bytes`]: the last, short interval and the
    /// processes still traced make one more part per table at most.
    pub fn finish_reserve(&self) -> u64 {
        self.tables.len() as u64 * FOOTER_BYTES
    }

    /// (table, parts, rows) for the exit summary.
    pub fn stats(&self) -> Vec<(&'static str, u32, u64)> {
        self.tables
            .iter()
            .map(|t| (t.table, t.parts(), t.rows))
            .collect()
    }
}
