//! `scalp-bpf run`: check everything, load, mark the targets, then loop: every interval snapshot
//! the maps into Arrow batches and the sink; between intervals follow process events.

pub mod child;
mod rings;
mod session;
pub mod tracking;

use std::{path::PathBuf, time::SystemTime};

use crate::{
    cli::run::RunArgs,
    exit::ExitCode,
    kernel::{
        self,
        btf::{BtfError, KernelBtf},
        privileges::{self, PrivilegeError},
    },
    loader::{self, LoadError},
    settings::Settings,
    sink::{
        Sink, SinkError,
        budget::Budget,
        metadata::{RunMetadata, SCHEMA_VERSION},
        output::{self, OutputError},
    },
    targets::{self, TargetError, TargetSpec, TracedReason, procfs::ProcInfo},
    tracers::{self, TracerError, drops::DropsTable},
};
pub use session::{Action, Collected, Frontend, Headless, Output, Plan, Session, Signals, Tracing};
use tracking::{Tracking, TrackingError};

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
    #[error(transparent)]
    Tracking(#[from] TrackingError),
    #[error("cannot write {path}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
            RunError::Tracer(_) | RunError::Tracking(_) | RunError::Runtime(_) => {
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

/// The settings of a run, from its flags and the machine.
fn settings(args: &RunArgs, watch_exec: bool) -> Settings {
    Settings {
        tracers: args
            .tracers
            .tracers
            .iter()
            .filter(|t| !(args.tracers.no_system && *t == "system"))
            .cloned()
            .collect(),
        syscall_latency: args.syscalls.mode(),
        watch_exec,
        files: args.tracers.files.map(usize::from),
        sql: args.sql.settings(),
        http_capture: args.http.http_capture_bytes,
        rpc_ports: with_default(5672, &args.http.rpc_port),
        cache_ports: with_default(11211, &args.http.cache_port),
        block_fallback: crate::settings::block_devices_without_iostats(),
        map_entries: args.tracers.map_entries.clone(),
        block_stale_ms: args.tracers.block_stale_ms,
    }
}

/// A protocol's default port and the ones given with its flag, sorted, once each.
fn with_default(default: u16, more: &[u16]) -> Vec<u16> {
    let mut ports = vec![default];
    ports.extend(more);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Loads the kernel side for `settings`: the loader decides what this kernel allows each enabled
/// tracer (`loader::plan`), says on stderr what is degraded or left out, and attaches. Returns
/// what was loaded, the tracers that run, and what each enabled one got.
pub fn load(
    settings: &Settings,
    kbtf: &KernelBtf,
) -> Result<(loader::Loaded, loader::Tracers), RunError> {
    let plan = loader::plan(settings, kbtf)?;
    let (loaded, tracers) = loader::load_plan(plan, loader::Mode::Attach)?;
    loader::notify(&tracers.support);
    Ok((loaded, tracers))
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

    let Started {
        mut tracing,
        settings,
        kernel_tracers,
        first_interval_start,
    } = start_tracing(&args, kbtf, command.is_some())?;
    // From here on a SIGINT or SIGTERM ends the run the normal way: a signal sent as soon as
    // run.json exists (tracing is on) once killed the process with its files incomplete.
    let signals = Signals::new()?;
    let child = match &command {
        Some(cmd) => Some(cmd.spawn(|pid| {
            let info = targets::procfs::read(pid).unwrap_or(ProcInfo {
                pid,
                ppid: std::process::id(),
                ..Default::default()
            });
            tracing.tracking.trace(&info, TracedReason::Command);
        })?),
        None => None,
    };

    let output = open_output(
        &args,
        argv,
        &out_dir,
        host,
        started,
        &settings,
        &kernel_tracers,
    )?;
    tracing::info!(output = %out_dir.display(), processes = tracing.tracking.processes.live_count(), "tracing");
    let session = Session {
        tracing,
        output: Some(output),
        plan: Plan {
            interval: args.timing.interval,
            first_interval_start,
            duration: args.timing.duration,
            pids_only: command.is_none()
                && args
                    .targets
                    .pids
                    .iter()
                    .all(|t| matches!(t, TargetSpec::Pid(_))),
            child,
        },
        frontend: Headless,
    };
    session.run(signals).await
}

/// What [`start_tracing`] leaves: the programs attached, the collectors built, the targets
/// marked.
pub struct Started {
    pub tracing: Tracing,
    pub settings: Settings,
    /// The tracers that run and what each enabled one got from this kernel.
    pub kernel_tracers: loader::Tracers,
    /// When the first interval starts: once the targets are marked, before a command starts
    /// and run.json says tracing is on (tracers that read counters outside the maps took their
    /// baseline then).
    pub first_interval_start: i64,
}

/// The part of a run that `run` and `top` share: resolves the targets, loads and attaches the
/// enabled tracers, builds their collectors and marks the targets traced. Fails when no target
/// is left running (unless names are watched, or `with_command`: its command is marked next).
pub fn start_tracing(
    args: &RunArgs,
    kbtf: KernelBtf,
    with_command: bool,
) -> Result<Started, RunError> {
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
    let settings = settings(args, !names.is_empty());
    let (mut loaded, kernel_tracers) = load(&settings, &kbtf)?;
    // The kernel's parsed BTF is needed only to load; what it and the loader freed goes back to
    // the system (malloc keeps freed heap otherwise: tens of MiB of RSS for the whole run).
    drop(kbtf);
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    let enabled = &kernel_tracers.enabled;

    // The tracers fill their tables in the kernel (syscall classes, sampling periods) before any
    // target is marked: a short command would otherwise run before them.
    let mut collectors = tracers::build(&mut loaded.ebpf, &settings, loaded.arch, enabled)?;
    let drops = DropsTable::new(&mut loaded.ebpf, enabled)?;
    let mut tracking = Tracking::new(&mut loaded.ebpf, names)?;
    for (info, reason) in &initial {
        tracking.trace(info, reason.clone());
    }
    // A target that exited between resolution and marking never sends an exit event.
    tracking.sweep();
    let _ = tracking.take_ended();
    if tracking.processes.live_count() == 0 && !tracking.watches_names() && !with_command {
        let pid = initial.first().map_or(0, |(p, _)| p.pid);
        return Err(TargetError::Exited { pid }.into());
    }
    // The first interval starts here, before the command starts and run.json says tracing is
    // on: tracers that read counters outside the maps take their baseline now.
    for (_, tracer) in &mut collectors {
        tracer.start(&tracking.processes);
    }
    let first_interval_start = tracking.processes.now_unix_ns();
    Ok(Started {
        tracing: Tracing {
            loaded,
            tracking,
            tracers: collectors,
            drops,
        },
        settings,
        kernel_tracers,
        first_interval_start,
    })
}

/// Creates the output directory, run.json and the sink with every enabled table.
pub fn open_output(
    args: &RunArgs,
    argv: Vec<String>,
    out_dir: &std::path::Path,
    host: String,
    started: SystemTime,
    settings: &Settings,
    kernel_tracers: &loader::Tracers,
) -> Result<Output, RunError> {
    let enabled = &kernel_tracers.enabled;
    output::create(out_dir)?;
    let (kernel_release, kernel_version) = kernel::release_and_version();
    let meta = RunMetadata {
        tool: "scalp-bpf",
        tool_version: env!("CARGO_PKG_VERSION"),
        schema_version: SCHEMA_VERSION,
        host,
        kernel_release,
        kernel_version,
        arch: crate::syscall_names::Arch::host().map_or("unknown", |a| a.name()),
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
        kernel_support: kernel_tracers.support.clone(),
    };
    meta.write(out_dir).map_err(|source| RunError::Metadata {
        path: out_dir.join("run.json"),
        source,
    })?;
    let meta_bytes = std::fs::metadata(out_dir.join("run.json")).map_or(0, |m| m.len());
    let schemas = enabled
        .iter()
        .flat_map(|r| r.tables.iter().map(|t| (t.name, (t.schema)())))
        .collect();
    let sink = Sink::new(
        out_dir,
        schemas,
        &meta.key_values(),
        args.output.sink_options(args.timing.interval),
    )?;
    Ok(Output {
        sink,
        meta,
        budget: args.output.max_size.0.map(Budget::new),
        meta_bytes,
    })
}
