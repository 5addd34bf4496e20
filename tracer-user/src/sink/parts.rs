//! The layout before the write-ahead log (`--flush-every`, deprecated): every table writes its
//! own Parquet part, closed (fsync, rename, fsync of the directory) every `--flush-every`. It
//! costs a file, a footer and two fsyncs per table per part; it stays for comparison
//! (`cargo xtask bench layout`) and for readers that want per-interval files.

use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::file::properties::WriterProperties;

use super::{
    error::SinkError,
    seal::{PartWriter, properties},
};

struct Table {
    name: &'static str,
    schema: SchemaRef,
    props: WriterProperties,
    next: u32,
    open: Option<PartWriter>,
    rows: u64,
    closed_bytes: u64,
}

impl Table {
    fn parts(&self) -> u32 {
        self.next - 1 - u32::from(self.open.is_some())
    }
}

pub struct Parts {
    root: PathBuf,
    tables: Vec<Table>,
    flush_every: Duration,
    slack: Duration,
    last_rotation: Instant,
}

impl Parts {
    pub fn new(
        root: &Path,
        schemas: Vec<(&'static str, SchemaRef)>,
        kv: &[(String, String)],
        flush_every: Duration,
        interval: Duration,
    ) -> Result<Parts, SinkError> {
        let mut tables = Vec::new();
        for (name, schema) in schemas {
            let dir = root.join(name);
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&dir)
                .map_err(|e| SinkError::io(root, &dir, e))?;
            let mut kv = kv.to_vec();
            kv.push(("scalp.table".to_owned(), name.to_owned()));
            tables.push(Table {
                name,
                props: properties(&schema, &kv),
                schema,
                next: 1,
                open: None,
                rows: 0,
                closed_bytes: 0,
            });
        }
        Ok(Parts {
            root: root.to_owned(),
            tables,
            flush_every,
            slack: interval / 2,
            last_rotation: Instant::now(),
        })
    }

    fn table(&mut self, name: &str) -> &mut Table {
        self.tables
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("table {name} is not registered with the sink"))
    }

    pub fn write(&mut self, table: &str, batch: &RecordBatch) -> Result<(), SinkError> {
        let root = self.root.clone();
        let t = self.table(table);
        if t.open.is_none() {
            let w = PartWriter::create(&root, t.name, t.next, t.schema.clone(), t.props.clone())?;
            t.next += 1;
            t.open = Some(w);
        }
        if let Some(w) = t.open.as_mut() {
            w.write(batch)?;
        }
        t.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes every open part once `--flush-every` has passed since the last rotation.
    pub fn end_interval(&mut self) -> Result<(), SinkError> {
        if self.last_rotation.elapsed() + self.slack >= self.flush_every {
            self.last_rotation = Instant::now();
            self.close_all(&[])?;
        }
        Ok(())
    }

    fn close_all(&mut self, extra: &[(String, String)]) -> Result<(), SinkError> {
        for t in &mut self.tables {
            if let Some(w) = t.open.take() {
                t.closed_bytes += w.close(extra)?.bytes;
            }
        }
        Ok(())
    }

    /// Closes every part; a table that got no rows gets one empty part so that readers find its
    /// schema.
    pub fn finish(&mut self, extra: &[(String, String)]) -> Result<(), SinkError> {
        let names: Vec<&'static str> = self
            .tables
            .iter()
            .filter(|t| t.parts() == 0 && t.open.is_none())
            .map(|t| t.name)
            .collect();
        for name in names {
            let schema = self.table(name).schema.clone();
            self.write(name, &RecordBatch::new_empty(schema))?;
        }
        self.close_all(extra)
    }

    /// Drops the open parts (their hidden files are removed): only complete files remain.
    pub fn abandon(&mut self) {
        for t in &mut self.tables {
            t.open = None;
        }
    }

    pub fn bytes(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| t.closed_bytes + t.open.as_ref().map_or(0, PartWriter::size))
            .sum()
    }

    pub fn tables(&self) -> usize {
        self.tables.len()
    }

    pub fn stats(&self) -> Vec<(&'static str, u32, u64)> {
        self.tables
            .iter()
            .map(|t| (t.name, t.parts(), t.rows))
            .collect()
    }
}
