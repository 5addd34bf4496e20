//! One module per tracer: each reads its kernel maps at the end of an interval and returns the
//! interval's rows as an Arrow batch for its table. Adding a tracer means a module here, its
//! kernel module in tracer-ebpf, its types in tracer-common, and one line in [`build`].

pub mod columns;
pub mod drops;
pub mod processes;
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
    /// Its table (a sub-directory of the output).
    fn table(&self) -> &'static str;
    /// Reads the maps and returns the rows for `interval` (None when nothing happened).
    fn collect(
        &mut self,
        interval: &Interval,
        processes: &Registry,
    ) -> Result<Option<RecordBatch>, TracerError>;
    /// Deletes the map entries of processes that ended (their last interval is collected).
    fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), TracerError>;
    /// (tracer, reason, count) of everything this tracer saw dropped during the run.
    fn run_drops(&self) -> Vec<(&'static str, &'static str, u64)> {
        Vec::new()
    }
}

/// Every table a run writes, with its schema (for the schema golden test and empty parts).
pub fn all_schemas() -> Vec<(&'static str, SchemaRef)> {
    vec![
        (syscalls::TABLE, syscalls::schema()),
        (drops::TABLE, drops::schema()),
        (processes::TABLE, processes::schema()),
    ]
}

/// The tracers of a run, taking their maps from the loaded object.
pub fn build(
    ebpf: &mut Ebpf,
    settings: &Settings,
    arch: Arch,
) -> Result<Vec<Box<dyn Tracer>>, TracerError> {
    Ok(vec![
        Box::new(syscalls::SyscallTracer::new(
            ebpf,
            arch,
            settings.syscall_latency,
        )?),
        Box::new(drops::DropsTracer::new(ebpf)?),
    ])
}

/// Takes a map out of the object.
pub fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, TracerError> {
    ebpf.take_map(name).ok_or(TracerError::MissingMap(name))
}
