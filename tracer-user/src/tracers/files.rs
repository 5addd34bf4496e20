//! The `files` table (`--files N`): per interval, the N (process, file) pairs that moved the most
//! bytes through read/write-family syscalls.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    sync::{Arc, LazyLock},
};

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{Int64Builder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use aya::Ebpf;
use tracer_common::{
    dispatch::{HOOK_FILES, KIND_MASK, KIND_SHIFT, KIND_SOCKET, RESOLVE_FD},
    fileio::{self as common, FILE_STATS, FileIoConfig, FileKey, FileStats, FilesDrop},
};

use super::{
    Build, Interval, KernelDrops, Registration, Table, Tracer, TracerError,
    columns::{IntervalProcessColumns, batch, interval_process_fields},
    dispatch::facts,
    views::TableSpec,
};
use crate::{
    devices::kernel_dev,
    kernel::btf::BtfError,
    loader::KernelSetup,
    processes::{OfProcess, ProcessKey, Processes, comm_string},
    settings::Settings,
    snapshot::{Counters, Op, StatsMap},
};

crate::processes::of_process!(FileKey);

pub const TABLE: &str = "files";

pub static REGISTRATION: Registration = Registration {
    name: "files",
    // Enabled by `--files N`, not by `--tracers`.
    selectable: false,
    wanted: |s| s.files.is_some(),
    probes: &[],
    tables: &[Table {
        name: TABLE,
        schema,
        summary: Some(TableSpec {
            table: TABLE,
            title: "Files",
            keys: &["file_path"],
            counters: &["read_bytes", "write_bytes", "reads", "writes"],
            histogram: None,
            default_sort: "write_bytes",
            rank: 4,
        }),
    }],
    metrics: &[],
    drops: Some(KernelDrops::of::<FilesDrop>),
    setup,
    hooks,
    build,
};

fn setup(k: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    let b = k.btf;
    k.global(
        common::CONFIG,
        &FileIoConfig {
            file_dentry_offset: b.path_offset(&[("file", "f_path"), ("path", "dentry")])?,
            dentry_name_offset: b.path_offset(&[("dentry", "d_name"), ("qstr", "name")])?,
            inode_sb_offset: b.field_offset("inode", "i_sb")?,
            sb_dev_offset: b.field_offset("super_block", "s_dev")?,
        },
    );
    Ok(())
}

/// The read/write families on anything that may be a file: the file itself is needed.
fn hooks(_: &Settings, name: &str) -> u32 {
    let facts = facts(name);
    if facts == 0 || (facts & KIND_MASK) >> KIND_SHIFT == KIND_SOCKET {
        return 0;
    }
    HOOK_FILES | RESOLVE_FD
}

fn build(ebpf: &mut Ebpf, b: &Build<'_>) -> super::Built {
    let top = b.settings.files.unwrap_or(20);
    Ok(Some(Box::new(FilesTracer::new(ebpf, top)?)))
}

/// Intervals without I/O after which a file's kernel entry is dropped (its counts are all
/// written; new I/O starts a fresh entry).
const IDLE_INTERVALS: u32 = 60;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = interval_process_fields();
    fields.extend([
        Field::new("file_path", DataType::Utf8, false),
        Field::new("file_device", DataType::Utf8, false),
        Field::new("file_inode", DataType::Int64, false),
        Field::new("reads", DataType::Int64, false),
        Field::new("writes", DataType::Int64, false),
        Field::new("read_bytes", DataType::Int64, false),
        Field::new("write_bytes", DataType::Int64, false),
    ]);
    Arc::new(Schema::new(fields))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

impl Counters for FileStats {
    fn zero() -> Self {
        FileStats {
            read_bytes: 0,
            write_bytes: 0,
            reads: 0,
            writes: 0,
            fd: 0,
            _pad: 0,
            name: [0; tracer_common::fileio::FILE_NAME_BYTES],
        }
    }

    /// Combines the counters. A sum over CPUs keeps the fd of a CPU that saw the file and the
    /// first name found; a difference keeps the newer total's fd and name.
    fn combine(&self, o: &Self, op: Op) -> Self {
        let (fd, name) = match op {
            Op::Add => (
                if o.reads + o.writes > 0 {
                    o.fd
                } else {
                    self.fd
                },
                if self.name[0] != 0 { self.name } else { o.name },
            ),
            Op::Sub => (self.fd, self.name),
        };
        FileStats {
            read_bytes: op.u64(self.read_bytes, o.read_bytes),
            write_bytes: op.u64(self.write_bytes, o.write_bytes),
            reads: op.u64(self.reads, o.reads),
            writes: op.u64(self.writes, o.writes),
            fd,
            _pad: 0,
            name,
        }
    }

    fn is_zero(&self) -> bool {
        self.reads == 0 && self.writes == 0
    }
}

pub struct FilesTracer {
    stats: StatsMap<FileKey, FileStats>,
    totals: Vec<(FileKey, FileStats)>,
    top: usize,
    /// Paths found so far, per (pid, dev, ino).
    paths: HashMap<(u32, u32, u64), String>,
    idle: HashMap<FileKey, u32>,
}

impl FilesTracer {
    pub fn new(ebpf: &mut Ebpf, top: usize) -> Result<Self, TracerError> {
        Ok(FilesTracer {
            stats: StatsMap::take(ebpf, FILE_STATS)?,
            totals: Vec::new(),
            top,
            paths: HashMap::new(),
            idle: HashMap::new(),
        })
    }

    /// The file's path through /proc/PID/fd/FD when that descriptor still opens it, else its
    /// name as the kernel saw it.
    fn path(&mut self, key: &FileKey, stats: &FileStats) -> String {
        let id = (key.tgid, key.dev, key.ino);
        if let Some(p) = self.paths.get(&id) {
            return p.clone();
        }
        let link = format!("/proc/{}/fd/{}", key.tgid, stats.fd);
        let (major, minor) = kernel_dev(key.dev);
        let resolved = std::fs::metadata(&link)
            .ok()
            .filter(|m| {
                m.ino() == key.ino && libc::major(m.dev()) == major && libc::minor(m.dev()) == minor
            })
            .and_then(|_| std::fs::read_link(&link).ok())
            .map(|p| p.to_string_lossy().into_owned());
        match resolved {
            Some(p) => {
                self.paths.insert(id, p.clone());
                p
            }
            None => comm_string(&stats.name),
        }
    }
}

impl Tracer for FilesTracer {
    fn snapshot(&mut self, _processes: &Processes) -> Result<(), TracerError> {
        self.totals = self.stats.totals()?;
        Ok(())
    }

    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError> {
        let totals = std::mem::take(&mut self.totals);
        let mut changed: Vec<(FileKey, FileStats)> = Vec::new();
        for (key, total) in totals {
            match self.stats.delta(key, total) {
                Some(d) => {
                    self.idle.remove(&key);
                    changed.push((key, d));
                }
                None => *self.idle.entry(key).or_default() += 1,
            }
        }
        // Forget files idle for long: their counts are written, the kernel map stays bounded.
        let stale: Vec<FileKey> = self
            .idle
            .iter()
            .filter(|(_, n)| **n >= IDLE_INTERVALS)
            .map(|(k, _)| *k)
            .collect();
        if !stale.is_empty() {
            self.stats.remove(|k| stale.contains(k))?;
            for k in &stale {
                self.idle.remove(k);
            }
        }
        changed.sort_by_key(|(k, d)| (std::cmp::Reverse(d.read_bytes + d.write_bytes), *k));
        changed.truncate(self.top);
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let mut process = IntervalProcessColumns::default();
        let mut path = StringBuilder::new();
        let mut device = StringBuilder::new();
        let mut inode = Int64Builder::new();
        let mut reads = Int64Builder::new();
        let mut writes = Int64Builder::new();
        let mut read_bytes = Int64Builder::new();
        let mut write_bytes = Int64Builder::new();
        for (key, d) in &changed {
            let p = key.process();
            process.append(interval, p, processes.get(p));
            path.append_value(self.path(key, d));
            let (major, minor) = kernel_dev(key.dev);
            device.append_value(format!("{major}:{minor}"));
            inode.append_value(key.ino as i64);
            reads.append_value(d.reads as i64);
            writes.append_value(d.writes as i64);
            read_bytes.append_value(d.read_bytes as i64);
            write_bytes.append_value(d.write_bytes as i64);
        }
        let mut columns = process.finish();
        columns.extend::<[ArrayRef; 7]>([
            Arc::new(path.finish()),
            Arc::new(device.finish()),
            Arc::new(inode.finish()),
            Arc::new(reads.finish()),
            Arc::new(writes.finish()),
            Arc::new(read_bytes.finish()),
            Arc::new(write_bytes.finish()),
        ]);
        batch(TABLE, schema(), columns).map(|b| vec![(TABLE, b)])
    }

    fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), TracerError> {
        self.stats.reap(ended)?;
        self.idle.retain(|k, _| !ended.contains(&k.process()));
        self.paths
            .retain(|(pid, _, _), _| !ended.iter().any(|e| e.tgid == *pid));
        Ok(())
    }
}
