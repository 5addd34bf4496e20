//! Process tracking during a run: the kernel's fork/exec/exit events, the `TRACED` marks, and
//! the processes every table's rows refer to. Name targets pick up late starters here (at exec,
//! or by a rescan each interval for names set later with prctl/setproctitle).

use std::os::fd::{AsRawFd as _, RawFd};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use tracer_common::process::{PROCESS_EVENTS, ProcessEvent, TRACED, TRACED_FLAG};

use crate::{
    kernel::maps::{self, MapAccessError},
    processes::{ProcessRecord, Processes},
    targets::{self, TracedReason, matcher, procfs::ProcInfo, traced::TracedMap},
};

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error(transparent)]
    Map(#[from] MapAccessError),
}

/// The traced processes and the kernel state that follows them.
pub struct Tracking {
    pub processes: Processes,
    traced: TracedMap,
    events: RingBuf<MapData>,
    /// Name targets: late starters matching them are picked up.
    names: Vec<String>,
}

impl Tracking {
    /// Takes the TRACED map and the process events out of the loaded object.
    pub fn new(ebpf: &mut Ebpf, names: Vec<String>) -> Result<Self, TrackingError> {
        let traced = TracedMap::new(maps::take(ebpf, TRACED)?)?;
        Ok(Tracking {
            processes: Processes::new(),
            traced,
            events: maps::take_as(ebpf, PROCESS_EVENTS)?,
            names,
        })
    }

    /// The events ring, for the session to poll.
    pub fn ring(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    pub fn watches_names(&self) -> bool {
        !self.names.is_empty()
    }

    /// Marks a process found in /proc traced (a target, or the command just forked).
    pub fn trace(&mut self, info: &ProcInfo, reason: TracedReason) {
        if let Ok(generation) = self.traced.mark(info.pid) {
            self.processes.add_from_proc(info, generation, reason);
        }
    }

    /// Applies every waiting event; untraced processes that exec'd are matched against names.
    pub fn drain(&mut self) {
        loop {
            let event: ProcessEvent = {
                let Some(item) = self.events.next() else {
                    break;
                };
                if item.len() < size_of::<ProcessEvent>() {
                    continue;
                }
                // SAFETY: the record holds a ProcessEvent written by the kernel side (checked
                // length; read_unaligned makes no alignment assumption).
                unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) }
            };
            if let Some(candidate) = self.processes.apply(&event) {
                self.consider(candidate);
            }
        }
    }

    /// Ends processes gone from /proc without an exit event, and unmarks them. A process seen
    /// dead (a zombie with no thread left: a main thread that ended first is a zombie while the
    /// others run) has run sched_process_exit in its last thread, which queued its exit event
    /// before the process became a zombie: the ring is read again first, so that a process that
    /// exited just after the last read ends with its exit code, not as vanished.
    pub fn sweep(&mut self) {
        let gone = self.processes.vanished();
        if gone.is_empty() {
            return;
        }
        self.drain();
        for tgid in self.processes.end_vanished(&gone) {
            self.traced.unmark(tgid);
        }
    }

    /// An untraced process exec'd (or a rescan found it): trace it if it matches a name.
    fn consider(&mut self, pid: u32) {
        if self.names.is_empty() || pid == std::process::id() || self.processes.is_live(pid) {
            return;
        }
        let Ok(info) = targets::procfs::read(pid) else {
            return;
        };
        if let Some(name) = self.names.iter().find(|n| matcher::matches(n, &info)) {
            tracing::info!(pid, name = %name, "late starter traced");
            let reason = TracedReason::Target(name.clone());
            self.trace(&info, reason);
        }
    }

    /// Looks for untraced processes that match a name now (set by prctl/setproctitle).
    pub fn rescan(&mut self) {
        if self.names.is_empty() {
            return;
        }
        for pid in targets::procfs::all_pids() {
            if self.traced.get(pid) & TRACED_FLAG == 0 {
                self.consider(pid);
            }
        }
    }

    /// The processes that ended since the last call (their last interval is collected).
    pub fn take_ended(&mut self) -> Vec<ProcessRecord> {
        self.processes.take_ended()
    }
}
