//! One module per tracer: each reads its kernel maps at the end of an interval and returns the
//! interval's rows as an Arrow batch for its table. Adding a tracer means a module here, its
//! kernel module in tracer-ebpf, its types in tracer-common, and one line in [`build`].

pub mod blockio;
pub mod columns;
pub mod drops;
pub mod fileio;
pub mod files;
pub mod http;
pub mod processes;
pub mod sql;
pub mod syscalls;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use aya::{Ebpf, maps::MapError};

use crate::{
    processes::{ProcessKey, Registry},
    settings::Settings,
    syscall_names::Arch,
};

/// The wall-clock span an interval covers, ns since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub start_unix_ns: i64,
    pub end_unix_ns: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("the kernel object has no map {0}")]
    MissingMap(&'static str),
    #[error("cannot use map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot build the {table} batch: {source}")]
    Arrow {
        table: &'static str,
        #[source]
        source: arrow_schema::ArrowError,
    },
}

/// A tracer's user side.
pub trait Tracer {
    /// Its tables (sub-directories of the output) and their schemas.
    fn tables(&self) -> Vec<(&'static str, SchemaRef)>;
    /// Reads the maps and returns the rows for `interval`, per table (none when nothing
    /// happened).
    fn collect(
        &mut self,
        interval: &Interval,
        processes: &Registry,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError>;
    /// Deletes the map entries of processes that ended (their last interval is collected).
    fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), TracerError>;
    /// (tracer, reason, count) of everything this tracer saw dropped during the run, beyond the
    /// kernel's drop counters (which the drops tracer reads).
    fn run_drops(&self) -> Vec<(&'static str, &'static str, u64)> {
        Vec::new()
    }

    /// Drops counted in user space since the last call (written to the drops table).
    fn take_drops(&mut self) -> Vec<(&'static str, &'static str, u64)> {
        Vec::new()
    }

    /// A ring buffer the session should drain as events arrive, if the tracer has one.
    fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Drains that ring buffer.
    fn drain(&mut self, _processes: &Registry) {}
}

/// Every table a run can write, with its schema (for the schema golden test).
#[cfg(test)]
pub fn all_schemas() -> Vec<(&'static str, SchemaRef)> {
    vec![
        (syscalls::TABLE, syscalls::schema()),
        (fileio::TABLE, fileio::schema()),
        (files::TABLE, files::schema()),
        (blockio::TABLE, blockio::schema()),
        (sql::tables::STATEMENTS, sql::tables::statements_schema()),
        (sql::tables::CONNECTIONS, sql::tables::connections_schema()),
        (drops::TABLE, drops::schema()),
        (processes::TABLE, processes::schema()),
    ]
}

/// The tracers of a run, taking their maps from the loaded object, and the drops table.
pub fn build(
    ebpf: &mut Ebpf,
    settings: &Settings,
    arch: Arch,
) -> Result<(Vec<Box<dyn Tracer>>, drops::DropsTracer), TracerError> {
    let mut tracers: Vec<Box<dyn Tracer>> = vec![Box::new(syscalls::SyscallTracer::new(
        ebpf,
        arch,
        settings.syscall_latency,
    )?)];
    // The syscall classes drive both file I/O and SQL in the kernel.
    if settings.fileio || settings.sql.is_some() {
        fileio::fill_ops(ebpf, arch)?;
    }
    if settings.fileio {
        tracers.push(Box::new(fileio::FileIoTracer::new(ebpf)?));
    }
    if let Some(top) = settings.files {
        tracers.push(Box::new(files::FilesTracer::new(ebpf, top)?));
    }
    if settings.blockio {
        tracers.push(Box::new(blockio::BlockIoTracer::new(ebpf)?));
    }
    if let Some(sql) = &settings.sql {
        tracers.push(Box::new(sql::SqlTracer::new(ebpf, sql.clone())?));
    }
    Ok((tracers, drops::DropsTracer::new(ebpf)?))
}

/// Takes a map out of the object.
pub fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, TracerError> {
    ebpf.take_map(name).ok_or(TracerError::MissingMap(name))
}

/// The type as pyarrow prints it (the notation of schemas/*.toml).
#[cfg(test)]
pub fn pyarrow_type(t: &arrow_schema::DataType) -> String {
    use arrow_schema::{DataType, TimeUnit};
    match t {
        DataType::Boolean => "bool".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 => "string".into(),
        DataType::Timestamp(unit, tz) => {
            let unit = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            match tz {
                Some(tz) => format!("timestamp[{unit}, tz={tz}]"),
                None => format!("timestamp[{unit}]"),
            }
        }
        DataType::List(f) => format!("list<{}: {}>", f.name(), pyarrow_type(f.data_type())),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod schema_docs {
    use std::path::PathBuf;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Doc {
        table: String,
        description: String,
        columns: Vec<Column>,
    }

    #[derive(serde::Deserialize)]
    struct Column {
        name: String,
        #[serde(rename = "type")]
        ty: String,
        nullable: bool,
        #[allow(dead_code, reason = "documentation only; its presence is checked")]
        unit: String,
        description: String,
    }

    fn schemas_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
    }

    #[test]
    fn every_table_matches_its_documented_schema() {
        for (table, schema) in all_schemas() {
            let path = schemas_dir().join(format!("{table}.toml"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let doc: Doc =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(doc.table, table);
            assert!(!doc.description.is_empty());
            let code: Vec<(String, String, bool)> = schema
                .fields()
                .iter()
                .map(|f| {
                    (
                        f.name().clone(),
                        pyarrow_type(f.data_type()),
                        f.is_nullable(),
                    )
                })
                .collect();
            let documented: Vec<(String, String, bool)> = doc
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.clone(), c.nullable))
                .collect();
            assert_eq!(
                code, documented,
                "schemas/{table}.toml differs from the code"
            );
            for c in &doc.columns {
                assert!(
                    !c.description.is_empty(),
                    "{table}.{} is undocumented",
                    c.name
                );
            }
        }
    }

    #[test]
    fn every_documented_table_is_written() {
        let tables: Vec<&str> = all_schemas().iter().map(|(t, _)| *t).collect();
        for entry in std::fs::read_dir(schemas_dir()).expect("schemas/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    tables.contains(&stem.as_str()),
                    "schemas/{stem}.toml has no table"
                );
            }
        }
    }
}
