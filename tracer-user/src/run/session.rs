//! The running session: the event loop (intervals, rings, signals, the command) and the way out.

use std::{
    future::Future,
    os::fd::AsRawFd as _,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use arrow_array::RecordBatch;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use super::{
    RunError, child, rfc3339,
    rings::{Rings, Source},
    tracking::Tracking,
};
use crate::{
    exit::ExitCode,
    loader::Loaded,
    processes::{ProcessKey, ProcessRecord, Processes},
    sink::{
        Sink,
        budget::Budget,
        metadata::{DropTotal, RunMetadata},
    },
    tracers::{self, DropCount, Interval, drops::DropsTable},
};

/// How long a traced command gets to exit after we passed it a SIGINT/SIGTERM; after that (or a
/// second signal) tracing stops and the command is left running, untraced.
const COMMAND_GRACE: Duration = Duration::from_secs(10);
/// Room kept, for `--max-size`, for each traced process's row in the processes table (written
/// when the run stops) and for run.json growing at the end.
const PROCESS_ROW_BYTES: u64 = 512;
const RUN_JSON_GROWTH: u64 = 4 << 10;

/// What is loaded and collected.
pub struct Tracing {
    /// Keeps the programs attached and the maps alive.
    pub loaded: Loaded,
    pub tracking: Tracking,
    /// The enabled tracers' collectors, with their names.
    pub tracers: tracers::Collectors,
    pub drops: DropsTable,
}

/// Where it goes.
pub struct Output {
    pub sink: Sink,
    pub meta: RunMetadata,
    /// `--max-size`, if any.
    pub budget: Option<Budget>,
    /// Size of run.json when the run started.
    pub meta_bytes: u64,
}

/// When it ends.
pub struct Plan {
    pub interval: Duration,
    /// When the first interval started (ns since the epoch): before the command started and
    /// run.json was written.
    pub first_interval_start: i64,
    pub duration: Option<Duration>,
    /// Only PIDs were given: stop when they have all ended.
    pub pids_only: bool,
    /// The command started with `-- CMD`.
    pub child: Option<u32>,
}

/// One interval as the session collected it: what the sink writes, shown to a [`Frontend`].
pub struct Collected<'a> {
    pub interval: Interval,
    /// Every table's rows of the interval (the drops table's included), as the sink gets them.
    pub batches: &'a [(&'static str, RecordBatch)],
    pub processes: &'a Processes,
    /// The processes that ended in the interval.
    pub ended: &'a [ProcessRecord],
}

/// What a frontend asks of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// End the session (the user quit).
    Quit,
}

/// Something that watches a session live (`top`): it sees every interval's rows, and its input
/// may end the session. `run` has none ([`Headless`]).
pub trait Frontend {
    /// Waits for the user and handles what they did. Must be cancel-safe: the session drops the
    /// future whenever something else happens first.
    fn input(&mut self) -> impl Future<Output = Action>;
    /// Every interval, once collected (and before it is written).
    fn interval(&mut self, collected: &Collected<'_>);
    /// The session is over: give the terminal back before the closing lines are printed.
    fn end(&mut self) {}
}

/// No frontend: `scalp-bpf run`.
pub struct Headless;

impl Frontend for Headless {
    fn input(&mut self) -> impl Future<Output = Action> {
        std::future::pending()
    }
    fn interval(&mut self, _: &Collected<'_>) {}
}

pub struct Session<F: Frontend = Headless> {
    pub tracing: Tracing,
    /// The files written; None for `top` without `--output`.
    pub output: Option<Output>,
    pub plan: Plan,
    pub frontend: F,
}

/// Why the loop ended.
enum Stop {
    Duration,
    MaxSize,
    /// A signal; the command (if any) did not exit within the grace period.
    Signal(&'static str, i32),
    CommandExited(i32),
    TargetsEnded,
    /// The frontend's user quit.
    Quit,
    Failed(RunError),
}

/// Signals the session listens to. Listening starts when this is made (until then SIGINT and
/// SIGTERM kill the process), so it is made before the command starts and run.json appears.
pub struct Signals {
    int: Signal,
    term: Signal,
    child: Signal,
}

impl Signals {
    pub fn new() -> Result<Signals, RunError> {
        let on = |kind| signal(kind).map_err(RunError::Runtime);
        Ok(Signals {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            child: on(SignalKind::child())?,
        })
    }
}

impl<F: Frontend> Session<F> {
    pub async fn run(mut self, mut signals: Signals) -> Result<ExitCode, RunError> {
        let rings = self.rings()?;
        // The kernel wakes us for the tracers' rings only when they fill up (a wakeup per record
        // would cost the traced process more than the capture itself); otherwise they are polled,
        // as often as the most demanding tracer asks.
        let ring_poll = self
            .tracing
            .tracers
            .iter()
            .filter(|(_, t)| !t.rings().is_empty())
            .map(|(_, t)| t.ring_poll())
            .min();
        let poll_rings = ring_poll.is_some();
        let mut poll = tokio::time::interval(ring_poll.unwrap_or(Duration::from_secs(1)));
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let start = Instant::now();
        let mut ticker = tokio::time::interval_at(start + self.plan.interval, self.plan.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let deadline = self.plan.duration.map(|d| start + d);
        let mut interval_start = self.plan.first_interval_start;
        let mut grace: Option<Instant> = None;
        let mut received: Option<(&'static str, i32)> = None;

        let stop = loop {
            // The command may have exited before SIGCHLD was watched.
            if let Some(status) = self.command_status() {
                break Stop::CommandExited(status);
            }
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = self.end_interval(&mut interval_start) {
                        break Stop::Failed(e);
                    }
                    if self.over_budget() {
                        break Stop::MaxSize;
                    }
                    if self.plan.pids_only && self.tracing.tracking.processes.live_count() == 0 {
                        break Stop::TargetsEnded;
                    }
                }
                _ = poll.tick(), if poll_rings => self.drain_tracers(),
                source = rings.readable() => self.drain(source),
                _ = signals.int.recv() => {
                    if let Some(stop) = self.on_signal("SIGINT", libc::SIGINT, &mut grace, &mut received) { break stop; }
                }
                _ = signals.term.recv() => {
                    if let Some(stop) = self.on_signal("SIGTERM", libc::SIGTERM, &mut grace, &mut received) { break stop; }
                }
                _ = signals.child.recv() => {}
                action = self.frontend.input() => {
                    if action == Action::Quit { break Stop::Quit; }
                }
                _ = sleep_until(deadline) => break Stop::Duration,
                _ = sleep_until(grace) => {
                    let (name, sig) = received.unwrap_or(("SIGTERM", libc::SIGTERM));
                    break Stop::Signal(name, sig);
                }
            }
        };
        drop(rings);
        self.frontend.end();
        let (untraced, left_running) = match (&stop, self.plan.child) {
            // Tracing stopped before the command ended: it goes on untraced, and scalp-bpf waits
            // for it (its exit code is the run's), with the programs unloaded.
            (Stop::MaxSize | Stop::Failed(_), Some(pid)) => (Some(pid), None),
            // It did not exit within the grace period of a signal passed on to it, or a second
            // signal came: it is left running.
            (Stop::Signal(..), Some(pid)) if matches!(child::try_wait(pid), Ok(None)) => {
                (None, Some(pid))
            }
            _ => (None, None),
        };
        let finished = self.finish(stop, interval_start);
        if let (Some(pid), Some((name, _))) = (left_running, received) {
            eprintln!(
                "scalp-bpf: the command (PID {pid}) had not exited on the {name} passed on to it (it may ignore the signal); tracing stopped, the command goes on untraced"
            );
        }
        let Some(pid) = untraced else {
            return finished.map(|f| f.code);
        };
        match finished {
            Ok(mut f) => {
                let code = wait_untraced(pid, &mut signals).await;
                if let Some((meta, root)) = &mut f.run {
                    meta.command_exit_code = Some(i32::from(code.code()));
                    if let Err(e) = meta.write(root) {
                        tracing::warn!("cannot update run.json with the command's exit code: {e}");
                    }
                }
                Ok(code)
            }
            Err(e) => {
                // Said now, not when the command ends.
                eprintln!("scalp-bpf: {e}");
                wait_untraced(pid, &mut signals).await;
                Ok(e.exit_code())
            }
        }
    }

    /// Every ring the loop waits on.
    fn rings(&self) -> Result<Rings, RunError> {
        let mut rings = Rings::default();
        rings
            .add(Source::Processes, self.tracing.tracking.ring())
            .map_err(RunError::Runtime)?;
        if let Some(logger) = &self.tracing.loaded.logger {
            rings
                .add(Source::Logs, logger.as_raw_fd())
                .map_err(RunError::Runtime)?;
        }
        for (i, (_, tracer)) in self.tracing.tracers.iter().enumerate() {
            for fd in tracer.rings() {
                rings
                    .add(Source::Tracer(i), fd)
                    .map_err(RunError::Runtime)?;
            }
        }
        Ok(rings)
    }

    fn drain(&mut self, source: Source) {
        let t = &mut self.tracing;
        match source {
            Source::Processes => t.tracking.drain(),
            Source::Logs => {
                if let Some(logger) = &mut t.loaded.logger {
                    logger.flush();
                }
            }
            Source::Tracer(i) => {
                if let Some((_, tracer)) = t.tracers.get_mut(i) {
                    tracer.drain(&t.tracking.processes);
                }
            }
        }
    }

    fn drain_tracers(&mut self) {
        let t = &mut self.tracing;
        for (_, tracer) in &mut t.tracers {
            tracer.drain(&t.tracking.processes);
        }
    }

    /// The command's wait status once it has exited (not blocking).
    fn command_status(&self) -> Option<i32> {
        let pid = self.plan.child?;
        match child::try_wait(pid) {
            Ok(status) => status,
            // Not our child any more (cannot happen): treat as failed.
            Err(_) => Some(1 << 8),
        }
    }

    /// `--max-size`: whether the next interval could take the output past the limit.
    fn over_budget(&mut self) -> bool {
        let Some(o) = &mut self.output else {
            return false;
        };
        let Some(budget) = &mut o.budget else {
            return false;
        };
        let used = o.sink.bytes() + o.meta_bytes;
        let reserve = o.sink.finish_reserve()
            + self.tracing.tracking.processes.live_count() as u64 * PROCESS_ROW_BYTES
            + RUN_JSON_GROWTH;
        budget.exhausted(used, reserve)
    }

    /// First SIGINT/SIGTERM: with a command, pass it on and wait for the command (bounded by
    /// [`COMMAND_GRACE`]); without, stop. A second signal stops at once.
    fn on_signal(
        &mut self,
        name: &'static str,
        sig: i32,
        grace: &mut Option<Instant>,
        received: &mut Option<(&'static str, i32)>,
    ) -> Option<Stop> {
        match (self.plan.child, received.is_some()) {
            (Some(pid), false) => {
                child::pass_signal(pid, sig);
                *received = Some((name, sig));
                *grace = Some(Instant::now() + COMMAND_GRACE);
                None
            }
            _ => Some(Stop::Signal(name, sig)),
        }
    }

    /// End of an interval: events first (so ended processes are known), then every table's rows,
    /// then name rescans.
    fn end_interval(&mut self, interval_start: &mut i64) -> Result<(), RunError> {
        self.tracing.tracking.drain();
        self.tracing.tracking.sweep();
        self.collect(interval_start)?;
        self.tracing.tracking.rescan();
        if let Some(o) = &mut self.output {
            o.sink.rotate_if_due()?;
        }
        Ok(())
    }

    /// Reads every tracer's maps at the same instant, then builds the interval's rows, shows
    /// them to the frontend and writes them; processes that ended are written and reaped from
    /// the maps.
    fn collect(&mut self, interval_start: &mut i64) -> Result<(), RunError> {
        let t = &mut self.tracing;
        let processes = &t.tracking.processes;
        let end = processes.now_unix_ns();
        let interval = Interval {
            start_unix_ns: *interval_start,
            end_unix_ns: end,
        };
        *interval_start = end;
        for (_, tracer) in &mut t.tracers {
            tracer.snapshot(processes)?;
        }
        t.drops.snapshot()?;
        let mut batches = Vec::new();
        let mut user_drops: Vec<DropCount> = Vec::new();
        for (_, tracer) in &mut t.tracers {
            batches.extend(tracer.batches(&interval, processes)?);
            user_drops.extend(tracer.take_drops());
        }
        if let Some(batch) = t.drops.batch(&interval, user_drops)? {
            batches.push((tracers::drops::TABLE, batch));
        }
        let ended = t.tracking.take_ended();
        self.frontend.interval(&Collected {
            interval,
            batches: &batches,
            processes: &t.tracking.processes,
            ended: &ended,
        });
        if let Some(o) = &mut self.output {
            for (table, batch) in &batches {
                o.sink.write(table, batch)?;
            }
        }
        if !ended.is_empty() {
            let keys: Vec<ProcessKey> = ended.iter().map(|r| r.key).collect();
            for (_, tracer) in &mut t.tracers {
                tracer.reap(&keys)?;
            }
            if let Some(o) = &mut self.output {
                write_processes(&mut o.sink, &ended)?;
            }
        }
        Ok(())
    }

    /// The way out, whatever the reason: last events, last interval, every process, every part
    /// closed, run.json complete.
    fn finish(mut self, stop: Stop, mut interval_start: i64) -> Result<Finished, RunError> {
        let end = End::of(stop, self.plan.child.is_some());
        let mut failure = end.failure;
        if let (Some(status), Some(o)) = (end.command_status, &mut self.output) {
            o.meta.command_exit_code = Some(i32::from(child::exit_code_of(status)));
        }
        if failure.is_none() {
            // The command's exit event is in the ring by the time waitpid returns.
            self.tracing.tracking.drain();
            if let (Some(pid), Some(status)) = (self.plan.child, end.command_status) {
                self.tracing.tracking.processes.set_exit_status(pid, status);
            }
            let result = self.collect(&mut interval_start).and_then(|()| {
                let all = self.tracing.tracking.processes.take_all();
                match &mut self.output {
                    Some(o) => write_processes(&mut o.sink, &all),
                    None => Ok(()),
                }
            });
            if let Err(e) = result {
                failure = Some(e);
            }
        }
        let drops: Vec<DropTotal> = self
            .tracing
            .drops
            .run_totals()
            .into_iter()
            .chain(self.tracing.tracers.iter().flat_map(|(_, t)| t.run_drops()))
            .map(|(tracer, reason, count)| DropTotal {
                tracer: tracer.to_owned(),
                reason: reason.to_owned(),
                count,
            })
            .collect();
        let Some(mut o) = self.output else {
            // Nothing written (`top` without --output): the losses are still said.
            for d in &drops {
                eprintln!("scalp-bpf: dropped {} ({} {})", d.count, d.tracer, d.reason);
            }
            return match failure {
                Some(e) => Err(e),
                None => Ok(Finished {
                    code: end.code,
                    run: None,
                }),
            };
        };
        o.meta.run_end = Some(rfc3339(SystemTime::now()));
        o.meta.end_reason = Some(end.reason);
        o.meta.drops = drops;
        close_sink(&mut o, &mut failure);
        let root = o.sink.root().to_owned();
        let meta_result = o.meta.write(&root);
        for d in &o.meta.drops {
            eprintln!("scalp-bpf: dropped {} ({} {})", d.count, d.tracer, d.reason);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        meta_result.map_err(|source| RunError::Metadata {
            path: root.join("run.json"),
            source,
        })?;
        if let (Some(budget), true) = (&o.budget, end.max_size) {
            let command = match self.plan.child {
                Some(pid) if end.command_status.is_none() => {
                    format!("; the command (PID {pid}) goes on untraced, waiting for it")
                }
                _ => String::new(),
            };
            eprintln!(
                "scalp-bpf: the output reached --max-size {}: tracing stopped{command}",
                budget.limit()
            );
        }
        let tables: Vec<String> = o
            .sink
            .stats()
            .iter()
            .map(|(t, _, rows)| format!("{t}: {rows} rows"))
            .collect();
        eprintln!(
            "scalp-bpf: wrote {} ({})",
            root.display(),
            tables.join(", ")
        );
        Ok(Finished {
            code: end.code,
            run: Some((o.meta, root)),
        })
    }
}

/// What a stop means for the run's end: its reason in run.json, scalp-bpf's exit code.
struct End {
    reason: String,
    code: ExitCode,
    /// The command's wait status, when it exited.
    command_status: Option<i32>,
    max_size: bool,
    failure: Option<RunError>,
}

impl End {
    fn of(stop: Stop, with_command: bool) -> End {
        let end = |reason: &str, code| End {
            reason: reason.to_owned(),
            code,
            command_status: None,
            max_size: false,
            failure: None,
        };
        match stop {
            Stop::Duration => end("duration", ExitCode::Ok),
            Stop::MaxSize => End {
                max_size: true,
                ..end("max size", ExitCode::Ok)
            },
            Stop::TargetsEnded => end("targets ended", ExitCode::Ok),
            Stop::Quit => end("quit", ExitCode::Ok),
            Stop::Signal(name, sig) => end(
                &format!("signal {name}"),
                if with_command {
                    ExitCode::Command((128 + sig) as u8)
                } else {
                    ExitCode::Ok
                },
            ),
            Stop::CommandExited(status) => End {
                command_status: Some(status),
                ..end(
                    "command exited",
                    ExitCode::Command(child::exit_code_of(status)),
                )
            },
            Stop::Failed(e) => End {
                reason: format!("error: {e}"),
                failure: Some(e),
                ..end("", ExitCode::OutputFailed)
            },
        }
    }
}

/// Closes every part; after a write failure, drops the parts in progress so only complete
/// files remain.
fn close_sink(o: &mut Output, failure: &mut Option<RunError>) {
    let kv: Vec<(String, String)> = o
        .meta
        .key_values()
        .into_iter()
        .filter(|(k, _)| k == "scalp.run_end" || k == "scalp.run")
        .collect();
    match failure {
        None => {
            if let Err(e) = o.sink.finish(&kv) {
                o.sink.abandon();
                *failure = Some(e.into());
            }
        }
        // Writing failed: the interval in progress is dropped, what was closed stays.
        Some(RunError::Sink(_)) => o.sink.abandon(),
        Some(_) => {
            // Close what can be closed; drop parts that cannot be completed.
            if o.sink.finish(&kv).is_err() {
                o.sink.abandon();
            }
        }
    }
}

fn write_processes(sink: &mut Sink, records: &[ProcessRecord]) -> Result<(), RunError> {
    if records.is_empty() {
        return Ok(());
    }
    let batch =
        tracers::processes::batch(records).map_err(|source| tracers::TracerError::Arrow {
            table: tracers::processes::TABLE,
            source,
        })?;
    sink.write(tracers::processes::TABLE, &batch)?;
    Ok(())
}

/// What a finished session leaves for the way out.
struct Finished {
    code: ExitCode,
    /// run.json's contents and the run's directory, when it wrote one.
    run: Option<(RunMetadata, PathBuf)>,
}

/// Waits for a command that goes on after tracing stopped; returns its exit code. The first
/// SIGINT/SIGTERM is passed on to it, a second one stops waiting.
async fn wait_untraced(pid: u32, signals: &mut Signals) -> ExitCode {
    let mut passed_on = false;
    loop {
        match child::try_wait(pid) {
            Ok(Some(status)) => return ExitCode::Command(child::exit_code_of(status)),
            Ok(None) => {}
            Err(_) => return ExitCode::Command(1),
        }
        let sig = tokio::select! {
            _ = signals.child.recv() => continue,
            _ = signals.int.recv() => libc::SIGINT,
            _ = signals.term.recv() => libc::SIGTERM,
        };
        if passed_on {
            return ExitCode::Command((128 + sig) as u8);
        }
        child::pass_signal(pid, sig);
        passed_on = true;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_out_has_its_reason_and_exit_code() {
        let e = End::of(Stop::Duration, false);
        assert_eq!((e.reason.as_str(), e.code), ("duration", ExitCode::Ok));
        let e = End::of(Stop::MaxSize, true);
        assert!(e.max_size);
        assert_eq!(e.code, ExitCode::Ok);
        // A signal: the run is fine; with a command, the shell's code for a signal.
        let e = End::of(Stop::Signal("SIGINT", libc::SIGINT), false);
        assert_eq!((e.reason.as_str(), e.code), ("signal SIGINT", ExitCode::Ok));
        let e = End::of(Stop::Signal("SIGTERM", libc::SIGTERM), true);
        assert_eq!(e.code, ExitCode::Command(128 + 15));
        // The command's own status becomes scalp-bpf's.
        let e = End::of(Stop::CommandExited(7 << 8), true);
        assert_eq!(
            (e.code, e.command_status),
            (ExitCode::Command(7), Some(7 << 8))
        );
        let e = End::of(Stop::Failed(RunError::NothingToTrace), false);
        assert_eq!(e.code, ExitCode::OutputFailed);
        assert!(e.reason.starts_with("error: nothing to trace"));
        assert!(e.failure.is_some());
    }
}
