//! `scalp-bpf run`: check everything, load, mark the targets, then loop: every interval snapshot
//! the maps into Arrow batches and the sink; between intervals follow process events.

pub mod child;
mod session;

use std::{path::PathBuf, time::SystemTime};

use crate::{
    cli::run::{RunArgs, TracerName},
    exit::ExitCode,
    kernel::{
        self,
        btf::{BtfError, KernelBtf},
        privileges::{self, PrivilegeError},
    },
    loader::{self, LoadError},
    processes::Registry,
    settings::Settings,
    sink::{
        Sink, SinkError,
        budget::Budget,
        metadata::{RunMetadata, SCHEMA_VERSION},
        output::{self, OutputError},
    },
    targets::{self, TargetError, TargetSpec, TracedReason, traced::TracedMap},
    tracers::{self, TracerError},
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("nothing to trace: give --pid PID|NAME, or a command after --")]
    NothingToTrace,
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{0}; tracing stopped{consequence}", consequence = .0.consequence())]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Command(#[from] child::CommandError),
    #[error(transparent)]
    Tracer(#[from] TracerError),
    #[error("cannot write {path}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot map the TRACED table: {0}")]
    TracedMap(std::io::Error),
    #[error("cannot start the event loop: {0}")]
    Runtime(std::io::Error),
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RunError::NothingToTrace => ExitCode::Usage,
            RunError::Privilege(_) => ExitCode::NotPermitted,
            RunError::Btf(_) => ExitCode::KernelUnsupported,
            RunError::Load(e) => e.exit_code(),
            RunError::Target(_) => ExitCode::TargetNotFound,
            RunError::Output(_) => ExitCode::OutputUnusable,
            RunError::Sink(_) | RunError::Metadata { .. } => ExitCode::OutputFailed,
            RunError::Command(e) => e.exit_code(),
            RunError::Tracer(_) | RunError::TracedMap(_) | RunError::Runtime(_) => {
                ExitCode::Internal
            }
        }
    }
}

/// Runs `scalp-bpf run` and returns its exit code (errors are reported on stderr).
pub fn main(args: RunArgs, argv: Vec<String>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime);
    let result = runtime.and_then(|rt| rt.block_on(execute(args, argv)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            e.exit_code()
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

async fn execute(args: RunArgs, argv: Vec<String>) -> Result<ExitCode, RunError> {
    let started = SystemTime::now();
    if args.targets.pids.is_empty() && args.command.is_empty() {
        return Err(RunError::NothingToTrace);
    }
    privileges::check()?;
    let kbtf = KernelBtf::open(&args.kernel_btf)?;
    let command = if args.command.is_empty() {
        None
    } else {
        Some(child::Prepared::new(&args.command)?)
    };
    let host = args.output.host.clone().unwrap_or_else(kernel::hostname);
    let out_dir = args
        .output
        .output
        .clone()
        .unwrap_or_else(|| output::default_dir(&host, started));
    output::check(&out_dir)?;

    let names: Vec<String> = args
        .targets
        .pids
        .iter()
        .filter_map(|t| match t {
            TargetSpec::Name(n) => Some(n.clone()),
            TargetSpec::Pid(_) => None,
        })
        .collect();
    let initial = targets::resolve(&args.targets.pids, &targets::snapshot(), args.targets.wait)?;

    let settings = Settings {
        syscall_latency: args.syscalls.mode(),
        watch_exec: !names.is_empty(),
        fileio: args.tracers.has(TracerName::Fileio) || args.tracers.files.is_some(),
        files: args.tracers.files.map(usize::from),
        sql: args
            .tracers
            .has(TracerName::Sql)
            .then(|| args.sql.settings()),
        blockio: args.tracers.has(TracerName::Blockio),
        block_fallback: crate::settings::block_devices_without_iostats(),
    };
    let mut loaded = loader::load(&settings, &kbtf)?;
    let traced = TracedMap::new(
        tracers::take_map(&mut loaded.ebpf, tracer_common::maps::TRACED)?,
        loaded.traced_elements,
    )
    .map_err(RunError::TracedMap)?;

    // The tracers fill their tables in the kernel (syscall classes, sampling periods) before any
    // target is marked: a short command would otherwise run before them.
    let (tracers, drops) = tracers::build(&mut loaded.ebpf, &settings, loaded.arch)?;
    let mut registry = Registry::new();
    for (info, reason) in &initial {
        if let Ok(generation) = traced.mark(info.pid) {
            registry.add_from_proc(info, generation, reason.clone());
        }
    }
    // A target that exited between resolution and marking never sends an exit event.
    for tgid in registry.sweep_vanished() {
        traced.unmark(tgid);
    }
    let _ = registry.take_ended();
    if registry.live_count() == 0 && names.is_empty() && command.is_none() {
        let pid = initial.first().map_or(0, |(p, _)| p.pid);
        return Err(TargetError::Exited { pid }.into());
    }

    let child = match &command {
        Some(cmd) => Some(cmd.spawn(|pid| {
            if let Ok(generation) = traced.mark(pid) {
                let info = targets::procfs::read(pid).unwrap_or(targets::procfs::ProcInfo {
                    pid,
                    ppid: std::process::id(),
                    ..Default::default()
                });
                registry.add_from_proc(&info, generation, TracedReason::Command);
            }
        })?),
        None => None,
    };

    output::create(&out_dir)?;
    let (kernel_release, kernel_version) = kernel::release_and_version();
    let meta = RunMetadata {
        tool: "scalp-bpf",
        tool_version: env!("CARGO_PKG_VERSION"),
        schema_version: SCHEMA_VERSION,
        host,
        kernel_release,
        kernel_version,
        arch: loaded.arch.name(),
        boot_id: kernel::boot_id(),
        run_start: rfc3339(started),
        run_end: None,
        command_line: argv,
        targets: args.targets.pids.iter().map(|t| t.to_string()).collect(),
        command: args
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        interval_ns: args.timing.interval.as_nanos() as u64,
        syscall_latency: settings.syscall_latency.describe(),
        end_reason: None,
        command_exit_code: None,
        drops: Vec::new(),
        units: args.output.units,
    };
    meta.write(&out_dir).map_err(|source| RunError::Metadata {
        path: out_dir.join("run.json"),
        source,
    })?;
    let meta_bytes = std::fs::metadata(out_dir.join("run.json")).map_or(0, |m| m.len());
    let mut schemas: Vec<_> = tracers.iter().flat_map(|t| t.tables()).collect();
    schemas.push((tracers::drops::TABLE, tracers::drops::schema()));
    schemas.push((tracers::processes::TABLE, tracers::processes::schema()));
    let sink = Sink::new(
        &out_dir,
        schemas,
        &meta.key_values(),
        args.output.sink_options(args.timing.interval),
    )?;
    tracing::info!(output = %out_dir.display(), processes = registry.live_count(), "tracing");

    let session = session::Session {
        loaded,
        traced,
        registry,
        tracers,
        drops,
        sink,
        meta,
        names,
        pids_only: command.is_none()
            && args
                .targets
                .pids
                .iter()
                .all(|t| matches!(t, TargetSpec::Pid(_))),
        child,
        interval: args.timing.interval,
        duration: args.timing.duration,
        budget: args.output.max_size.0.map(Budget::new),
        meta_bytes,
    };
    session.run().await
}
