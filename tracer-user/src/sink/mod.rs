//! The Parquet sink: one directory per table, holding parts that are written to a hidden
//! temporary name and renamed into place only once closed, so every visible `*.parquet` file is
//! complete. Parts rotate every `--flush-every` (by default every interval, so that a crash loses
//! at most the interval in progress); names sort in write order.

pub mod metadata;
pub mod output;

use std::{
    fs::{self, File},
    io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
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

/// An open part: written under `tmp`, renamed to `path` when closed.
struct OpenPart {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
}

/// The parts of one table.
pub struct TableWriter {
    table: &'static str,
    dir: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    next_part: u32,
    open: Option<OpenPart>,
    rows: u64,
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
            .map_err(|source| SinkError::Io {
                path: dir.clone(),
                source,
            })?;
        let mut kv = kv.to_vec();
        kv.push(("scalp.table".to_owned(), table.to_owned()));
        Ok(TableWriter {
            table,
            props: properties(&schema, &kv),
            dir,
            schema,
            next_part: 1,
            open: None,
            rows: 0,
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
                .map_err(|source| SinkError::Io {
                    path: tmp.clone(),
                    source,
                })?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
                .map_err(|source| SinkError::Parquet {
                    path: tmp.clone(),
                    source,
                })?;
            self.next_part += 1;
            self.open = Some(OpenPart { writer, tmp, path });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Appends rows to the open part.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        let part = self.open_part()?;
        part.writer
            .write(batch)
            .map_err(|source| SinkError::Parquet {
                path: part.tmp.clone(),
                source,
            })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the open part (footer, fsync, rename into place).
    pub fn close_part(&mut self, extra: &[(String, String)]) -> Result<(), SinkError> {
        let Some(mut part) = self.open.take() else {
            return Ok(());
        };
        for (k, v) in extra {
            part.writer
                .append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
        }
        let file = part
            .writer
            .into_inner()
            .map_err(|source| SinkError::Parquet {
                path: part.tmp.clone(),
                source,
            })?;
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| SinkError::Io { path, source }
        };
        file.sync_all().map_err(io_err(&part.tmp))?;
        fs::rename(&part.tmp, &part.path).map_err(io_err(&part.path))?;
        Ok(())
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

    /// (table, parts, rows) for the exit summary.
    pub fn stats(&self) -> Vec<(&'static str, u32, u64)> {
        self.tables
            .iter()
            .map(|t| (t.table, t.parts(), t.rows))
            .collect()
    }
}
