//! The traced processes: who they are (pid + start time), what they are called, when they ended.
//! Kernel maps key processes by (tgid, generation); this registry turns those keys into the
//! identity written to the output.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tracer_common::process::{ProcessEvent, ProcessEventKind, generation};

use crate::{
    kernel::{Clocks, clock_ticks_per_second},
    targets::{TracedReason, procfs},
};

/// Written processes remembered for naming late rows.
const RECENT_PROCESSES: usize = 4096;

/// A process as the kernel maps key it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub tgid: u32,
    pub generation: u32,
}

/// A kernel map key that belongs to one traced process.
pub trait OfProcess {
    fn process(&self) -> ProcessKey;
}

/// Implements [`OfProcess`] for kernel keys with `tgid` and `generation` fields (each tracer
/// for its own keys).
macro_rules! of_process {
    ($($key:ty),*) => {$(
        impl $crate::processes::OfProcess for $key {
            fn process(&self) -> $crate::processes::ProcessKey {
                $crate::processes::ProcessKey {
                    tgid: self.tgid,
                    generation: self.generation,
                }
            }
        }
    )*};
}
pub(crate) use of_process;

/// Everything the `processes` table says about one traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRecord {
    pub key: ProcessKey,
    pub parent_pid: u32,
    /// The comm (latest; exec changes it).
    pub name: String,
    pub command_line: String,
    /// Wall-clock ns; None if the start time could not be read.
    pub start_unix_ns: Option<i64>,
    pub traced_since_unix_ns: i64,
    pub end_unix_ns: Option<i64>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub reason: TracedReason,
}

impl ProcessRecord {
    pub fn pid(&self) -> u32 {
        self.key.tgid
    }
}

/// Live and recently ended traced processes.
pub struct Processes {
    live: HashMap<u32, ProcessRecord>,
    /// Ended, still to be reaped from the maps and written: keyed so that lookups by key work
    /// until then.
    ended: BTreeMap<ProcessKey, ProcessRecord>,
    /// Processes already written, kept (bounded) to name late rows: writeback of a process's
    /// pages can complete after it exited.
    recent: VecDeque<ProcessRecord>,
    clocks: Clocks,
    ticks_per_second: u64,
}

impl Default for Processes {
    fn default() -> Self {
        Processes::new()
    }
}

impl Processes {
    pub fn new() -> Processes {
        Processes {
            live: HashMap::new(),
            ended: BTreeMap::new(),
            recent: VecDeque::new(),
            clocks: Clocks::now(),
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    fn ticks_to_unix_ns(&self, ticks: u64) -> i64 {
        let boot_ns = ticks.saturating_mul(1_000_000_000) / self.ticks_per_second.max(1);
        self.clocks.boot_to_unix_ns(boot_ns)
    }

    /// Wall-clock ns now.
    pub fn now_unix_ns(&self) -> i64 {
        self.clocks
            .boot_to_unix_ns(crate::kernel::clock_ns(libc::CLOCK_BOOTTIME))
    }

    /// Registers a process found in /proc and just marked traced.
    pub fn add_from_proc(&mut self, info: &procfs::ProcInfo, generation: u8, reason: TracedReason) {
        let record = ProcessRecord {
            key: ProcessKey {
                tgid: info.pid,
                generation: u32::from(generation),
            },
            parent_pid: info.ppid,
            name: info.comm.clone(),
            command_line: info.command_line(),
            start_unix_ns: Some(self.ticks_to_unix_ns(info.start_ticks)),
            traced_since_unix_ns: self.now_unix_ns(),
            end_unix_ns: None,
            exit_code: None,
            exit_signal: None,
            reason,
        };
        self.insert_live(record);
    }

    fn insert_live(&mut self, record: ProcessRecord) {
        if let Some(previous) = self.live.insert(record.key.tgid, record) {
            // The PID was reused before we saw the old process end: end it now.
            self.end(previous, None, None);
        }
    }

    fn end(&mut self, mut record: ProcessRecord, end_unix_ns: Option<i64>, status: Option<i32>) {
        record.end_unix_ns = Some(end_unix_ns.unwrap_or_else(|| self.now_unix_ns()));
        if let Some(status) = status {
            // A wait(2) status: low 7 bits the signal, else the exit code in bits 8..16.
            if status & 0x7f == 0 {
                record.exit_code = Some((status >> 8) & 0xff);
            } else {
                record.exit_signal = Some(status & 0x7f);
            }
        }
        self.ended.insert(record.key, record);
    }

    /// Applies a kernel event. Returns the tgid of an untraced process that exec'd (a candidate
    /// for name matching).
    pub fn apply(&mut self, event: &ProcessEvent) -> Option<u32> {
        let kind = ProcessEventKind::try_from(event.kind).ok()?;
        let comm = comm_string(&event.comm);
        let key = ProcessKey {
            tgid: event.tgid,
            generation: u32::from(generation(event.traced)),
        };
        match kind {
            ProcessEventKind::Fork => {
                // A fork child runs its parent's program until it execs.
                let command_line = self
                    .live
                    .get(&event.parent_tgid)
                    .map(|p| p.command_line.clone())
                    .unwrap_or_default();
                let record = ProcessRecord {
                    key,
                    parent_pid: event.parent_tgid,
                    name: comm,
                    command_line,
                    start_unix_ns: Some(self.clocks.boot_to_unix_ns(event.start_boottime_ns)),
                    traced_since_unix_ns: self.clocks.boot_to_unix_ns(event.time_ns),
                    end_unix_ns: None,
                    exit_code: None,
                    exit_signal: None,
                    reason: TracedReason::Fork,
                };
                self.insert_live(record);
                None
            }
            ProcessEventKind::Exec => {
                if event.traced & tracer_common::process::TRACED_FLAG == 0 {
                    return Some(event.tgid);
                }
                if let Some(record) = self.live.get_mut(&event.tgid) {
                    record.name = comm;
                    record.command_line = args_string(&event.args, event.args_len);
                }
                None
            }
            ProcessEventKind::Exit => {
                if self.live.get(&event.tgid).is_some_and(|r| r.key == key) {
                    let record = self.live.remove(&event.tgid)?;
                    let end = self.clocks.boot_to_unix_ns(event.time_ns);
                    self.end(record, Some(end), Some(event.exit_code));
                }
                None
            }
        }
    }

    /// Live processes that are gone from /proc (or zombies, or their PID reused) although no
    /// exit event came: the event was lost, the process died before it was marked, or its event
    /// is still in the ring (see [`Processes::end_vanished`]).
    pub fn vanished(&self) -> Vec<ProcessKey> {
        self.live
            .values()
            .filter(|r| match procfs::read(r.pid()) {
                // A zombie makes no more syscalls; a different start time is a reused PID.
                Ok(info) => {
                    info.dead
                        || r.start_unix_ns.is_some_and(|s| {
                            (self.ticks_to_unix_ns(info.start_ticks) - s).abs() > 1_000_000_000
                        })
                }
                Err(_) => true,
            })
            .map(|r| r.key)
            .collect()
    }

    /// Ends the processes of `keys` that are still live (no exit event came since they were
    /// found vanished), without an exit status. Returns their tgids (to unmark).
    pub fn end_vanished(&mut self, keys: &[ProcessKey]) -> Vec<u32> {
        let mut ended = Vec::new();
        for key in keys {
            if self.live.get(&key.tgid).is_some_and(|r| r.key == *key)
                && let Some(record) = self.live.remove(&key.tgid)
            {
                self.end(record, None, None);
                ended.push(key.tgid);
            }
        }
        ended
    }

    /// Records the exit status of a process we waited for ourselves (the `--` command).
    pub fn set_exit_status(&mut self, tgid: u32, status: i32) {
        if let Some(record) = self.ended.values_mut().find(|r| r.pid() == tgid) {
            record.exit_code = None;
            record.exit_signal = None;
            if libc::WIFEXITED(status) {
                record.exit_code = Some(libc::WEXITSTATUS(status));
            } else if libc::WIFSIGNALED(status) {
                record.exit_signal = Some(libc::WTERMSIG(status));
            }
        }
    }

    /// The record for a kernel key: live, ended but not yet written, or written recently.
    pub fn get(&self, key: ProcessKey) -> Option<&ProcessRecord> {
        self.live
            .get(&key.tgid)
            .filter(|r| r.key == key)
            .or_else(|| self.ended.get(&key))
            .or_else(|| self.recent.iter().rev().find(|r| r.key == key))
    }

    /// Whether the process of this key is still running.
    pub fn is_live_key(&self, key: ProcessKey) -> bool {
        self.live.get(&key.tgid).is_some_and(|r| r.key == key)
    }

    pub fn is_live(&self, tgid: u32) -> bool {
        self.live.contains_key(&tgid)
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The processes running now (in no particular order).
    pub fn live(&self) -> impl Iterator<Item = &ProcessRecord> {
        self.live.values()
    }

    /// Takes the processes that ended (after their last interval was collected).
    pub fn take_ended(&mut self) -> Vec<ProcessRecord> {
        let ended: Vec<ProcessRecord> = std::mem::take(&mut self.ended).into_values().collect();
        self.recent.extend(ended.iter().cloned());
        while self.recent.len() > RECENT_PROCESSES {
            self.recent.pop_front();
        }
        ended
    }

    /// Takes every process, live ones included (end of the run).
    pub fn take_all(&mut self) -> Vec<ProcessRecord> {
        let mut all = self.take_ended();
        let mut live: Vec<ProcessRecord> = self.live.drain().map(|(_, r)| r).collect();
        live.sort_by_key(|r| r.key);
        all.extend(live);
        all
    }
}

/// An exec event's NUL-separated arguments as one space-separated string.
pub fn args_string(args: &[u8], len: u32) -> String {
    let raw = &args[..(len as usize).min(args.len())];
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    String::from_utf8_lossy(raw).replace('\0', " ")
}

/// A NUL-padded comm as a string.
pub fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use tracer_common::process::{TRACED_FLAG, next_traced_byte};

    use super::*;

    fn event(kind: ProcessEventKind, tgid: u32, traced: u8) -> ProcessEvent {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"work");
        ProcessEvent {
            kind: kind as u32,
            tgid,
            parent_tgid: 1,
            exit_code: 3 << 8,
            traced,
            _pad: [0; 7],
            time_ns: 1_000_000_000,
            start_boottime_ns: 500_000_000,
            comm,
            args_len: 0,
            _pad2: 0,
            args: [0; tracer_common::process::ARGS_BYTES],
        }
    }

    #[test]
    fn fork_then_exit_moves_a_process_to_ended_with_its_exit_code() {
        let mut reg = Processes::new();
        let byte = next_traced_byte(0);
        // A PID that cannot exist, so /proc has nothing to add.
        let tgid = u32::MAX - 1;
        reg.apply(&event(ProcessEventKind::Fork, tgid, byte));
        assert!(reg.is_live(tgid));
        let key = ProcessKey {
            tgid,
            generation: u32::from(generation(byte)),
        };
        assert_eq!(reg.get(key).map(|r| r.name.as_str()), Some("work"));
        reg.apply(&event(ProcessEventKind::Exit, tgid, byte & !TRACED_FLAG));
        assert!(!reg.is_live(tgid));
        let ended = reg.take_ended();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].exit_code, Some(3));
        assert!(ended[0].end_unix_ns.is_some());
    }

    #[test]
    fn an_exit_of_another_generation_is_ignored() {
        let mut reg = Processes::new();
        let tgid = u32::MAX - 2;
        let first = next_traced_byte(0);
        let second = next_traced_byte(first);
        reg.apply(&event(ProcessEventKind::Fork, tgid, second));
        reg.apply(&event(ProcessEventKind::Exit, tgid, first & !TRACED_FLAG));
        assert!(reg.is_live(tgid));
    }

    #[test]
    fn an_untraced_exec_is_a_candidate() {
        let mut reg = Processes::new();
        assert_eq!(reg.apply(&event(ProcessEventKind::Exec, 77, 0)), Some(77));
    }

    #[test]
    fn exec_args_become_a_command_line() {
        assert_eq!(
            args_string(b"python3\0-c\0pass\0xxxx", 15),
            "python3 -c pass"
        );
        assert_eq!(args_string(b"cut-off-arg", 7), "cut-off");
        assert_eq!(args_string(b"", 0), "");
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_string(b"python3\0\0\0\0\0\0\0\0\0"), "python3");
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    }
}
