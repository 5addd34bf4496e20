//! `scalp-bpf top`: a live terminal view of the traced services. It traces exactly as `run`
//! does — the same loading, process tracking and interval collection (`run::start_tracing`,
//! `run::Session`) — and shows each interval's rows instead of (or, with `--output`, as well as)
//! writing them.
//!
//! [`model`] folds the rows in, [`views`] says what each view shows, [`render`] draws,
//! [`input`] handles keys, [`app`] holds the state and is the session's frontend,
//! [`terminal`] owns the terminal and gives it back on every way out.

mod app;
mod input;
pub mod logs;
mod machine;
mod model;
mod render;
mod terminal;
mod usage;
mod views;

use std::time::SystemTime;

use crate::{
    cli::top::TopArgs,
    exit::ExitCode,
    kernel::{btf::KernelBtf, privileges},
    run::{self, Plan, RunError, Session, Signals, Started},
    sink::output,
};
use app::{App, Header, Top};
use terminal::{TerminalError, Tui};

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("nothing to trace: give --pid PID|NAME")]
    NothingToTrace,
    #[error(transparent)]
    Terminal(#[from] TerminalError),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl TopError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TopError::NothingToTrace => ExitCode::Usage,
            TopError::Terminal(_) => ExitCode::NoTerminal,
            TopError::Run(e) => e.exit_code(),
        }
    }
}

/// Runs `scalp-bpf top` and returns its exit code (errors are one line on stderr, once the
/// terminal is restored).
pub fn main(args: TopArgs, argv: Vec<String>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TopError::Run(RunError::Runtime(e)));
    let result = runtime.and_then(|rt| rt.block_on(execute(args, argv)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            e.exit_code()
        }
    }
}

async fn execute(args: TopArgs, argv: Vec<String>) -> Result<ExitCode, TopError> {
    let started = SystemTime::now();
    if args.targets.pids.is_empty() {
        return Err(TopError::NothingToTrace);
    }
    // Before anything is loaded: without a terminal there is nothing to show on.
    terminal::check()?;
    let args = args.into_run_args();
    privileges::check().map_err(RunError::from)?;
    let kbtf = KernelBtf::open(&args.kernel_btf).map_err(RunError::from)?;
    if let Some(dir) = &args.output.output {
        output::check(dir).map_err(RunError::from)?;
    }
    let Started {
        tracing,
        settings,
        kernel_tracers,
        first_interval_start,
    } = run::start_tracing(&args, kbtf, false)?;
    let signals = Signals::new()?;
    let output = match &args.output.output {
        Some(dir) => {
            let host = args
                .output
                .host
                .clone()
                .unwrap_or_else(crate::kernel::hostname);
            Some(run::open_output(
                &args,
                argv,
                dir,
                host,
                started,
                &settings,
                &kernel_tracers,
            )?)
        }
        None => None,
    };
    let tables = kernel_tracers
        .enabled
        .iter()
        .flat_map(|r| r.tables.iter().map(|t| t.name))
        .collect();
    let header = Header {
        targets: args
            .targets
            .pids
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(","),
        interval: args.timing.interval,
        output: args.output.output.as_ref().map(|d| d.display().to_string()),
    };
    let tui = Tui::enter()?;
    let session = Session {
        tracing,
        output,
        plan: Plan {
            interval: args.timing.interval,
            first_interval_start,
            duration: args.timing.duration,
            // top stays when its processes end, showing what they did, until it is quit.
            pids_only: false,
            child: None,
        },
        frontend: Top::new(App::new(header, tables), tui),
    };
    Ok(session.run(signals).await?)
}
