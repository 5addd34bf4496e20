//! The running session: the event loop and the way out.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};
use tracer_common::{maps::PROCESS_EVENTS, process::ProcessEvent};

use super::{RunError, child, rfc3339};
use crate::{
    exit::ExitCode,
    loader::Loaded,
    processes::{ProcessKey, Registry},
    sink::{
        Sink,
        budget::Budget,
        metadata::{DropTotal, RunMetadata},
    },
    targets::{self, TracedReason, matcher, traced::TracedMap},
    tracers::{self, Interval, Tracer, processes},
};

/// How long a traced command gets to exit after we passed it a SIGINT/SIGTERM.
const COMMAND_GRACE: Duration = Duration::from_secs(10);
/// How often a tracer's event ring is drained between the kernel's (rare) wakeups.
const EVENT_POLL: Duration = Duration::from_millis(20);
/// Room kept, for `--max-size`, for each traced process's row in the processes table (written
/// when the run stops) and for run.json growing at the end.
const PROCESS_ROW_BYTES: u64 = 512;
const RUN_JSON_GROWTH: u64 = 4 << 10;

pub struct Session {
    pub loaded: Loaded,
    pub traced: TracedMap,
    pub registry: Registry,
    pub tracers: Vec<Box<dyn Tracer>>,
    pub drops: tracers::drops::DropsTracer,
    pub sink: Sink,
    pub meta: RunMetadata,
    /// Name targets: late starters matching them are picked up.
    pub names: Vec<String>,
    /// Only PIDs were given: stop when they have all ended.
    pub pids_only: bool,
    pub child: Option<u32>,
    pub interval: Duration,
    pub duration: Option<Duration>,
    /// `--max-size`, if any.
    pub budget: Option<Budget>,
    /// Size of run.json when the run started.
    pub meta_bytes: u64,
}

/// Why the loop ended.
enum Stop {
    Duration,
    MaxSize,
    Signal(&'static str, i32),
    CommandExited(i32),
    TargetsEnded,
    Failed(RunError),
}

impl Session {
    pub async fn run(mut self) -> Result<ExitCode, RunError> {
        let ring = RingBuf::try_from(tracers::take_map(&mut self.loaded.ebpf, PROCESS_EVENTS)?)
            .map_err(|source| tracers::TracerError::Map {
                map: PROCESS_EVENTS,
                source,
            })?;
        let mut events = readable(ring)?;
        let mut logs = match self.loaded.logger.take() {
            Some(logger) => Some(readable(logger)?),
            None => None,
        };
        // A tracer's own ring buffer (the SQL tracer's), drained as it fills.
        let event_tracer = self.tracers.iter().position(|t| t.event_fd().is_some());
        let mut tracer_events = match event_tracer.and_then(|i| self.tracers[i].event_fd()) {
            Some(fd) => Some(readable(FdRef(fd))?),
            None => None,
        };
        // The kernel wakes us for that ring only when it fills up (a wakeup per record would
        // cost the traced process more than the capture itself); otherwise it is polled.
        let mut poll = tokio::time::interval(EVENT_POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Runtime)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Runtime)?;
        let mut child_wait: Option<JoinHandle<std::io::Result<i32>>> = self
            .child
            .map(|pid| tokio::task::spawn_blocking(move || child::wait(pid)));

        let start = Instant::now();
        let mut ticker = tokio::time::interval_at(start + self.interval, self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let deadline = self.duration.map(|d| start + d);
        let mut interval_start = self.registry.now_unix_ns();
        let mut grace: Option<Instant> = None;
        let mut received: Option<(&'static str, i32)> = None;

        let stop = loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = self.tick(&mut events, &mut interval_start) {
                        break Stop::Failed(e);
                    }
                    if self.over_budget() {
                        break Stop::MaxSize;
                    }
                    if self.pids_only && self.registry.live_count() == 0 {
                        break Stop::TargetsEnded;
                    }
                }
                _ = poll.tick(), if tracer_events.is_some() => {
                    if let Some(i) = event_tracer {
                        self.tracers[i].drain(&self.registry);
                    }
                }
                guard = events.readable_mut() => {
                    if let Ok(mut guard) = guard {
                        self.drain_events(guard.get_inner_mut());
                        guard.clear_ready();
                    }
                }
                guard = async { tracer_events.as_mut().expect("guarded").readable_mut().await }, if tracer_events.is_some() => {
                    if let (Ok(mut guard), Some(i)) = (guard, event_tracer) {
                        self.tracers[i].drain(&self.registry);
                        guard.clear_ready();
                    }
                }
                guard = async { logs.as_mut().expect("guarded").readable_mut().await }, if logs.is_some() => {
                    if let Ok(mut guard) = guard {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                }
                _ = sigint.recv() => {
                    if let Some(stop) = self.on_signal("SIGINT", libc::SIGINT, &mut grace, &mut received) { break stop; }
                }
                _ = sigterm.recv() => {
                    if let Some(stop) = self.on_signal("SIGTERM", libc::SIGTERM, &mut grace, &mut received) { break stop; }
                }
                _ = sleep_until(deadline) => break Stop::Duration,
                _ = sleep_until(grace) => {
                    let (name, sig) = received.unwrap_or(("SIGTERM", libc::SIGTERM));
                    break Stop::Signal(name, sig);
                }
                status = async { child_wait.as_mut().expect("guarded").await }, if child_wait.is_some() => {
                    match status {
                        Ok(Ok(status)) => break Stop::CommandExited(status),
                        _ => break Stop::CommandExited(1 << 8),
                    }
                }
            }
        };
        drop(logs);
        drop(tracer_events);
        // Tracing stopped before the command ended: it goes on untraced, and scalp-bpf waits for
        // it (its exit code is the run's), with the programs unloaded.
        let untraced = match (&stop, self.child, child_wait) {
            (Stop::MaxSize | Stop::Failed(_), Some(pid), Some(wait)) => Some((pid, wait)),
            _ => None,
        };
        let finished = self.finish(stop, &mut events, interval_start);
        drop(events);
        let Some((pid, wait)) = untraced else {
            return finished.map(|f| f.code);
        };
        match finished {
            Ok(mut f) => {
                let code = wait_untraced(pid, wait, &mut sigint, &mut sigterm).await;
                f.meta.command_exit_code = Some(i32::from(code.code()));
                if let Err(e) = f.meta.write(&f.root) {
                    tracing::warn!("cannot update run.json with the command's exit code: {e}");
                }
                Ok(code)
            }
            Err(e) => {
                // Said now, not when the command ends.
                eprintln!("scalp-bpf: {e}");
                wait_untraced(pid, wait, &mut sigint, &mut sigterm).await;
                Ok(e.exit_code())
            }
        }
    }

    /// `--max-size`: whether the next interval could take the output past the limit.
    fn over_budget(&mut self) -> bool {
        let Some(budget) = &mut self.budget else {
            return false;
        };
        let used = self.sink.bytes() + self.meta_bytes;
        let reserve = self.sink.finish_reserve()
            + self.registry.live_count() as u64 * PROCESS_ROW_BYTES
            + RUN_JSON_GROWTH;
        budget.exhausted(used, reserve)
    }

    /// First SIGINT/SIGTERM: with a command, pass it on and wait for the command (bounded);
    /// without, stop. A second signal stops at once.
    fn on_signal(
        &mut self,
        name: &'static str,
        sig: i32,
        grace: &mut Option<Instant>,
        received: &mut Option<(&'static str, i32)>,
    ) -> Option<Stop> {
        match (self.child, received.is_some()) {
            (Some(pid), false) => {
                child::pass_signal(pid, sig);
                *received = Some((name, sig));
                *grace = Some(Instant::now() + COMMAND_GRACE);
                None
            }
            _ => Some(Stop::Signal(name, sig)),
        }
    }

    /// End of an interval: events first (so ended processes are known), then every tracer's
    /// rows, then the processes that ended, then name rescans.
    fn tick(
        &mut self,
        events: &mut AsyncFd<RingBuf<MapData>>,
        interval_start: &mut i64,
    ) -> Result<(), RunError> {
        self.drain_events(events.get_mut());
        for tgid in self.registry.sweep_vanished() {
            self.traced.unmark(tgid);
        }
        self.collect(interval_start)?;
        if !self.names.is_empty() {
            self.rescan();
        }
        self.sink.rotate_if_due()?;
        Ok(())
    }

    fn collect(&mut self, interval_start: &mut i64) -> Result<(), RunError> {
        let end = self.registry.now_unix_ns();
        let interval = Interval {
            start_unix_ns: *interval_start,
            end_unix_ns: end,
        };
        *interval_start = end;
        let mut user_drops = Vec::new();
        for tracer in &mut self.tracers {
            for (table, batch) in tracer.collect(&interval, &self.registry)? {
                self.sink.write(table, &batch)?;
            }
            user_drops.extend(tracer.take_drops());
        }
        if let Some(batch) = self.drops.collect(&interval, user_drops)? {
            self.sink.write(tracers::drops::TABLE, &batch)?;
        }
        let ended = self.registry.take_ended();
        if !ended.is_empty() {
            let keys: Vec<ProcessKey> = ended.iter().map(|r| r.key).collect();
            for tracer in &mut self.tracers {
                tracer.reap(&keys)?;
            }
            self.write_processes(&ended)?;
        }
        Ok(())
    }

    fn write_processes(
        &mut self,
        records: &[crate::processes::ProcessRecord],
    ) -> Result<(), RunError> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = processes::batch(records).map_err(|source| tracers::TracerError::Arrow {
            table: processes::TABLE,
            source,
        })?;
        self.sink.write(processes::TABLE, &batch)?;
        Ok(())
    }

    fn drain_events(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<ProcessEvent>() {
                continue;
            }
            // SAFETY: the record holds a ProcessEvent written by the kernel side (checked length;
            // read_unaligned makes no alignment assumption).
            let event: ProcessEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            if let Some(candidate) = self.registry.apply(&event) {
                self.consider(candidate);
            }
        }
    }

    /// An untraced process exec'd (or a rescan found it): trace it if it matches a name.
    fn consider(&mut self, pid: u32) {
        if self.names.is_empty() || pid == std::process::id() || self.registry.is_live(pid) {
            return;
        }
        let Ok(info) = targets::procfs::read(pid) else {
            return;
        };
        if let Some(name) = self.names.iter().find(|n| matcher::matches(n, &info))
            && let Ok(generation) = self.traced.mark(pid)
        {
            tracing::info!(pid, name = %name, "late starter traced");
            self.registry
                .add_from_proc(&info, generation, TracedReason::Target(name.clone()));
        }
    }

    fn rescan(&mut self) {
        for pid in targets::procfs::all_pids() {
            if self.traced.get(pid) & tracer_common::process::TRACED_FLAG == 0 {
                self.consider(pid);
            }
        }
    }

    /// The way out, whatever the reason: last events, last interval, every process, every part
    /// closed, run.json complete.
    fn finish(
        mut self,
        stop: Stop,
        events: &mut AsyncFd<RingBuf<MapData>>,
        mut interval_start: i64,
    ) -> Result<Finished, RunError> {
        let mut failure = None;
        let mut command_status = None;
        let max_size = matches!(stop, Stop::MaxSize);
        let (reason, code) = match stop {
            Stop::Duration => ("duration".to_owned(), ExitCode::Ok),
            Stop::MaxSize => ("max size".to_owned(), ExitCode::Ok),
            Stop::TargetsEnded => ("targets ended".to_owned(), ExitCode::Ok),
            Stop::Signal(name, sig) => (
                format!("signal {name}"),
                if self.child.is_some() {
                    ExitCode::Command((128 + sig) as u8)
                } else {
                    ExitCode::Ok
                },
            ),
            Stop::CommandExited(status) => {
                command_status = Some(status);
                let code = child::exit_code_of(status);
                self.meta.command_exit_code = Some(i32::from(code));
                ("command exited".to_owned(), ExitCode::Command(code))
            }
            Stop::Failed(e) => {
                let r = format!("error: {e}");
                failure = Some(e);
                (r, ExitCode::OutputFailed)
            }
        };
        if failure.is_none() {
            // The command's exit event is in the ring by the time waitpid returns.
            self.drain_events(events.get_mut());
            if let (Some(pid), Some(status)) = (self.child, command_status) {
                self.registry.set_exit_status(pid, status);
            }
            let result = self.collect(&mut interval_start).and_then(|()| {
                let all = self.registry.take_all();
                self.write_processes(&all)
            });
            if let Err(e) = result {
                failure = Some(e);
            }
        }
        self.meta.run_end = Some(rfc3339(SystemTime::now()));
        self.meta.end_reason = Some(reason);
        self.meta.drops = self
            .drops
            .run_totals()
            .into_iter()
            .chain(self.tracers.iter().flat_map(|t| t.run_drops()))
            .map(|(tracer, reason, count)| DropTotal {
                tracer: tracer.to_owned(),
                reason: reason.to_owned(),
                count,
            })
            .collect();
        let kv: Vec<(String, String)> = self
            .meta
            .key_values()
            .into_iter()
            .filter(|(k, _)| k == "scalp.run_end" || k == "scalp.run")
            .collect();
        match failure {
            None => {
                if let Err(e) = self.sink.finish(&kv) {
                    self.sink.abandon();
                    failure = Some(e.into());
                }
            }
            // Writing failed: the interval in progress is dropped, what was closed stays.
            Some(RunError::Sink(_)) => self.sink.abandon(),
            Some(_) => {
                // Close what can be closed; drop parts that cannot be completed.
                if self.sink.finish(&kv).is_err() {
                    self.sink.abandon();
                }
            }
        }
        let root = self.sink.root().to_owned();
        let meta_result = self.meta.write(&root);
        for d in &self.meta.drops {
            eprintln!("scalp-bpf: dropped {} ({} {})", d.count, d.tracer, d.reason);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        meta_result.map_err(|source| RunError::Metadata {
            path: root.join("run.json"),
            source,
        })?;
        if let (Some(budget), true) = (&self.budget, max_size) {
            let command = match self.child {
                Some(pid) if command_status.is_none() => {
                    format!("; the command (PID {pid}) goes on untraced, waiting for it")
                }
                _ => String::new(),
            };
            eprintln!(
                "scalp-bpf: the output reached --max-size {}: tracing stopped{command}",
                budget.limit()
            );
        }
        let tables: Vec<String> = self
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
            code,
            meta: self.meta,
            root,
        })
    }
}

/// What a finished session leaves for the way out.
struct Finished {
    code: ExitCode,
    meta: RunMetadata,
    root: PathBuf,
}

/// Waits for a command that goes on after tracing stopped; returns its exit code. The first
/// SIGINT/SIGTERM is passed on to it, a second one stops waiting.
async fn wait_untraced(
    pid: u32,
    mut wait: JoinHandle<std::io::Result<i32>>,
    sigint: &mut Signal,
    sigterm: &mut Signal,
) -> ExitCode {
    let mut passed_on = false;
    loop {
        let sig = tokio::select! {
            status = &mut wait => {
                let status = match status {
                    Ok(Ok(status)) => status,
                    _ => 1 << 8,
                };
                return ExitCode::Command(child::exit_code_of(status));
            }
            _ = sigint.recv() => libc::SIGINT,
            _ = sigterm.recv() => libc::SIGTERM,
        };
        if passed_on {
            return ExitCode::Command((128 + sig) as u8);
        }
        child::pass_signal(pid, sig);
        passed_on = true;
    }
}

/// A descriptor owned by a tracer that outlives the session's event loop.
struct FdRef(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for FdRef {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Registers a map's fd with the reactor for readability.
fn readable<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>, RunError> {
    // SAFETY: `inner` (a ring buffer map or the aya-log reader) owns its fd and keeps it open and
    // unchanged until it is dropped, which happens only with the AsyncFd.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| RunError::Runtime(e.into_parts().1))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
