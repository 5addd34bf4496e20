//! The tracers, and the registry that lists them: one [`Registration`] per tracer says what it
//! attaches, which tables it writes, how it sets up the kernel side, which syscalls it hooks,
//! what `summary`/`diff` show of it, and how it builds its collector. Everything that iterates
//! tracers — the loader's setup and probes, the schema checks, the run loop, `summary`, `diff`,
//! `calibrate`, `check` — iterates [`REGISTRY`].
//!
//! Adding a tracer: its kernel module (tracer-ebpf/src/<name>.rs), its shared types
//! (tracer-common/src/<name>.rs), its module here, its schema file (schemas/<table>.toml), and
//! one line in [`REGISTRY`] (see the README's "Adding a tracer").

pub mod amqp;
pub mod blockio;
pub mod columns;
pub mod dispatch;
pub mod drops;
pub mod fileio;
pub mod files;
pub mod http;
pub mod memcached;
pub mod processes;
pub mod sockets;
pub mod sql;
pub mod syscalls;
pub mod system;
pub mod views;

use std::{sync::LazyLock, time::Duration};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use aya::Ebpf;

use crate::{
    kernel::{btf::BtfError, maps::MapAccessError},
    loader::KernelSetup,
    probes::Probe,
    processes::{ProcessKey, Processes},
    settings::Settings,
    syscall_names::Arch,
};

/// How often a tracer's rings are drained unless it asks for more: a wakeup of an idle process
/// costs about 0.1 ms of CPU on a small VM.
pub const RING_POLL: Duration = Duration::from_millis(100);

/// Every registration, in attach order: process tracking first, so that a child forked while
/// the other programs attach is already marked.
pub const REGISTRY: &[&Registration] = &[
    &processes::REGISTRATION,
    &dispatch::REGISTRATION,
    &syscalls::REGISTRATION,
    &fileio::REGISTRATION,
    &files::REGISTRATION,
    &blockio::REGISTRATION,
    &sql::REGISTRATION,
    &http::REGISTRATION,
    &amqp::REGISTRATION,
    &memcached::REGISTRATION,
    &sockets::REGISTRATION,
    &system::REGISTRATION,
    &drops::REGISTRATION,
];

/// The wall-clock span an interval covers, ns since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub start_unix_ns: i64,
    pub end_unix_ns: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error(transparent)]
    Map(#[from] MapAccessError),
    #[error("cannot build the {table} batch: {source}")]
    Arrow {
        table: &'static str,
        #[source]
        source: arrow_schema::ArrowError,
    },
}

/// What a registration's `build` returns: its collector, or None for parts the session drives.
pub type Built = Result<Option<Box<dyn Tracer>>, TracerError>;

/// A run's collectors, with the names of their tracers.
pub type Collectors = Vec<(&'static str, Box<dyn Tracer>)>;

/// One loss, as written to the `drops` table: (tracer, reason, count).
pub type DropCount = (&'static str, &'static str, u64);

/// A tracer's user side during a run: it reads its kernel maps (and drains its event rings) and
/// turns them into each interval's rows.
///
/// At the end of an interval the session calls [`Tracer::snapshot`] on every tracer, back to
/// back, so that all tables describe the same instant; then [`Tracer::batches`] on each, and only
/// then writes.
pub trait Tracer {
    /// The first interval starts now: the targets are marked, the command (if any) is about to
    /// start. Tracers that read counters outside the kernel's maps take their baseline here.
    fn start(&mut self, _processes: &Processes) {}
    /// Reads the kernel maps (totals, events still in rings) at the interval's end.
    fn snapshot(&mut self, processes: &Processes) -> Result<(), TracerError>;
    /// The interval's rows per table, from the last snapshot (none when nothing happened).
    fn batches(
        &mut self,
        interval: &Interval,
        processes: &Processes,
    ) -> Result<Vec<(&'static str, RecordBatch)>, TracerError>;
    /// Deletes the map entries of processes that ended (their last interval is written).
    fn reap(&mut self, ended: &[ProcessKey]) -> Result<(), TracerError>;

    /// Event ring buffers the session should drain as they fill (file descriptors).
    fn rings(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }
    /// How often the session drains the tracer's rings between the kernel's wakeups (which come
    /// only when a ring fills).
    fn ring_poll(&self) -> Duration {
        RING_POLL
    }
    /// Drains the tracer's rings.
    fn drain(&mut self, _processes: &Processes) {}
    /// Losses counted in user space since the last call (written to the drops table).
    fn take_drops(&mut self) -> Vec<DropCount> {
        Vec::new()
    }
    /// Losses known only at the end of the run (run.json and the exit message).
    fn run_drops(&self) -> Vec<DropCount> {
        Vec::new()
    }
}

/// A table a registration writes.
pub struct Table {
    pub name: &'static str,
    pub schema: fn() -> SchemaRef,
    /// What `summary` shows of it, if anything.
    pub summary: Option<views::TableSpec>,
}

/// A tracer's per-CPU drop counters in the kernel: the map and the names of its indexes.
pub struct KernelDrops {
    pub map: &'static str,
    pub tracer: &'static str,
    pub reasons: Vec<&'static str>,
}

impl KernelDrops {
    /// The counters of reason enum `R`.
    pub fn of<R: tracer_common::drops::Reasons>() -> KernelDrops {
        KernelDrops {
            map: R::MAP,
            tracer: R::TRACER,
            reasons: R::ALL.iter().map(|r| r.name()).collect(),
        }
    }
}

/// What a tracer's collector is built with.
pub struct Build<'a> {
    pub settings: &'a Settings,
    pub arch: Arch,
    /// The registrations enabled in this run.
    pub enabled: &'a [&'static Registration],
}

/// One tracer (or one of the always-on parts: process tracking, the syscall dispatch, drops).
pub struct Registration {
    pub name: &'static str,
    /// Whether `--tracers` lists it.
    pub selectable: bool,
    /// Whether the run's settings enable it.
    pub wanted: fn(&Settings) -> bool,
    /// Its programs; each is attached when enabled and its own condition holds.
    pub probes: &'static [Probe],
    /// The tables it writes.
    pub tables: &'static [Table],
    /// Its `diff` metrics.
    pub metrics: &'static [views::Metric],
    /// Its kernel drop counters, if any.
    pub drops: Option<fn() -> KernelDrops>,
    /// Writes its settings global and sizes its maps.
    pub setup: fn(&mut KernelSetup<'_>) -> Result<(), BtfError>,
    /// Its bits of a syscall's class in the dispatch table (`tracer_common::dispatch`): the
    /// hook that wants the syscall, and `RESOLVE_FD` when it needs the descriptor resolved.
    pub hooks: fn(&Settings, &str) -> u32,
    /// Builds its collector (after loading, before any process is traced); None for parts the
    /// session drives itself.
    pub build: fn(&mut Ebpf, &Build<'_>) -> Built,
}

/// For registrations without a settings global.
pub fn no_setup(_: &mut KernelSetup<'_>) -> Result<(), BtfError> {
    Ok(())
}

/// For registrations that hook no syscall.
pub fn no_hooks(_: &Settings, _: &str) -> u32 {
    0
}

/// For registrations the session drives itself.
pub fn no_collector(_: &mut Ebpf, _: &Build<'_>) -> Built {
    Ok(None)
}

/// For registrations always on.
pub fn always(_: &Settings) -> bool {
    true
}

/// The registrations these settings enable, in registry order.
pub fn enabled(settings: &Settings) -> Vec<&'static Registration> {
    REGISTRY
        .iter()
        .copied()
        .filter(|r| (r.wanted)(settings))
        .collect()
}

/// The names `--tracers` accepts, in registry order.
pub fn selectable() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|r| r.selectable)
        .map(|r| r.name)
        .collect()
}

/// `--tracers`'s default: every selectable tracer.
pub fn default_selection() -> &'static str {
    static DEFAULT: LazyLock<String> = LazyLock::new(|| selectable().join(","));
    &DEFAULT
}

/// Every table any run can write.
#[cfg(test)]
pub fn all_tables() -> Vec<&'static Table> {
    REGISTRY.iter().flat_map(|r| r.tables.iter()).collect()
}

/// Builds the collectors of the enabled registrations.
pub fn build(
    ebpf: &mut Ebpf,
    settings: &Settings,
    arch: Arch,
    enabled: &[&'static Registration],
) -> Result<Collectors, TracerError> {
    let context = Build {
        settings,
        arch,
        enabled,
    };
    let mut tracers = Vec::new();
    for r in enabled {
        if let Some(t) = (r.build)(ebpf, &context)? {
            tracers.push((r.name, t));
        }
    }
    Ok(tracers)
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
mod registry {
    use std::{collections::BTreeSet, path::PathBuf};

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
        for table in all_tables() {
            let path = schemas_dir().join(format!("{}.toml", table.name));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let doc: Doc =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(doc.table, table.name);
            assert!(!doc.description.is_empty());
            let code: Vec<(String, String, bool)> = (table.schema)()
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
                "schemas/{}.toml differs from the code",
                table.name
            );
            for c in &doc.columns {
                assert!(
                    !c.description.is_empty(),
                    "{}.{} is undocumented",
                    table.name,
                    c.name
                );
            }
        }
    }

    #[test]
    fn every_documented_table_is_written() {
        let tables: Vec<&str> = all_tables().iter().map(|t| t.name).collect();
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

    #[test]
    fn names_tables_and_programs_are_unique() {
        let mut names = BTreeSet::new();
        let mut tables = BTreeSet::new();
        let mut programs = BTreeSet::new();
        for r in REGISTRY {
            assert!(names.insert(r.name), "tracer {} twice", r.name);
            for t in r.tables {
                assert!(tables.insert(t.name), "table {} twice", t.name);
            }
            for p in r.probes {
                assert!(programs.insert(p.program), "program {} twice", p.program);
            }
        }
    }

    #[test]
    fn drop_reason_names_are_unique_per_tracer() {
        let mut seen = BTreeSet::new();
        for r in REGISTRY {
            if let Some(drops) = r.drops {
                let d = drops();
                for reason in d.reasons {
                    assert!(
                        seen.insert((d.tracer, reason)),
                        "{} {reason} twice",
                        d.tracer
                    );
                }
            }
        }
    }

    #[test]
    fn tracers_default_to_every_selectable_one() {
        assert_eq!(
            default_selection(),
            "syscalls,fileio,blockio,sql,http,rpc,cache,system"
        );
    }
}
