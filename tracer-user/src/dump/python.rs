//! Every thread's Python stack, read from the interpreter's memory (py-spy's reader: the
//! interpreter found from its binary's symbols, version-specific struct layouts, frames walked
//! with `process_vm_readv`). The process is stopped only while its threads' frames are read.

use std::{collections::HashMap, time::Instant};

use serde::Serialize;

use crate::python::{detect, memory};

/// One frame, innermost first.
#[derive(Debug, Clone, Serialize)]
pub struct PyFrame {
    pub function: String,
    pub file: String,
    pub line: i32,
}

/// A thread's Python state.
#[derive(Debug, Clone, Serialize)]
pub struct PyThread {
    /// `threading`'s name for it.
    pub name: Option<String>,
    pub owns_gil: bool,
    pub frames: Vec<PyFrame>,
}

/// What was read from one process.
#[derive(Debug)]
pub struct PyStacks {
    pub version: String,
    /// How long the process was stopped, in microseconds.
    pub paused_us: u64,
    /// By kernel thread id.
    pub threads: HashMap<u32, PyThread>,
}

/// Why there are no Python stacks.
#[derive(Debug, thiserror::Error)]
pub enum PyError {
    #[error("not a Python process")]
    NotPython,
    #[error("a Python this reader does not know: {0}")]
    Unsupported(String),
}

/// Reads the Python stacks of `pid`; only a CPython process ([`detect::is_cpython`]) is read,
/// so that other processes are never stopped.
pub fn stacks(pid: u32) -> Result<PyStacks, PyError> {
    if !detect::is_cpython(pid) {
        return Err(PyError::NotPython);
    }
    let config = py_spy::Config {
        blocking: py_spy::config::LockingStrategy::Lock,
        ..py_spy::Config::default()
    };
    let mut spy = py_spy::PythonSpy::new(pid as py_spy::Pid, &config)
        .map_err(|e| PyError::Unsupported(one_line(&e)))?;
    let start = Instant::now();
    let traces = spy
        .get_stack_traces()
        .map_err(|e| PyError::Unsupported(one_line(&e)))?;
    let paused_us = start.elapsed().as_micros() as u64;
    let unmapped: Vec<u64> = traces
        .iter()
        .filter(|t| t.os_thread_id.is_none())
        .map(|t| t.thread_id)
        .collect();
    let by_pthread = kernel_tids(pid, &unmapped);
    let threads = traces
        .into_iter()
        .filter_map(|t| {
            let tid = match t.os_thread_id {
                Some(id) => u32::try_from(id).ok()?,
                None => *by_pthread.get(&t.thread_id)?,
            };
            let frames = t
                .frames
                .into_iter()
                .map(|f| PyFrame {
                    function: f.name,
                    file: f.filename,
                    line: f.line,
                })
                .collect();
            Some((
                tid,
                PyThread {
                    name: t.thread_name,
                    owns_gil: t.owns_gil,
                    frames,
                },
            ))
        })
        .collect();
    Ok(PyStacks {
        version: spy.version.to_string(),
        paused_us,
        threads,
    })
}

/// Bytes of glibc's `struct pthread` searched for its `tid` (at 720 in glibc 2.31 to 2.41).
const PTHREAD_BYTES: usize = 1024;

/// The kernel thread ids of threads known by their `pthread_t`. Before 3.11 a thread state holds
/// only that (the address of glibc's `struct pthread`), and py-spy, built without libunwind,
/// gives no kernel id for it. `struct pthread` holds the kernel id (`tid`) at an offset of the
/// glibc's own: taken as the first offset at which every thread's struct holds a distinct live
/// thread id of the process. Empty when there is no such offset.
fn kernel_tids(pid: u32, pthreads: &[u64]) -> HashMap<u64, u32> {
    let live: std::collections::HashSet<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let structs: Vec<(u64, Vec<u8>)> = pthreads
        .iter()
        .filter_map(|&p| Some((p, memory::read(pid, p, PTHREAD_BYTES)?)))
        .collect();
    if structs.is_empty() {
        return HashMap::new();
    }
    let at =
        |b: &[u8], off: usize| u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
    (0..PTHREAD_BYTES / 4)
        .map(|i| 4 * i)
        .find(|&off| {
            let tids: std::collections::HashSet<u32> =
                structs.iter().map(|(_, b)| at(b, off)).collect();
            tids.len() == structs.len() && tids.iter().all(|t| live.contains(t))
        })
        .map(|off| structs.iter().map(|(p, b)| (*p, at(b, off))).collect())
        .unwrap_or_default()
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pthread_t_names_its_kernel_thread() {
        // This test's own threads: each says its pthread_t and its kernel id, then waits.
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (tx, stop) = (tx.clone(), stop.clone());
                std::thread::spawn(move || {
                    // SAFETY: no preconditions.
                    let (me, tid) = unsafe { (libc::pthread_self() as u64, libc::gettid() as u32) };
                    tx.send((me, tid)).unwrap();
                    let _ = stop.lock().unwrap().recv();
                })
            })
            .collect();
        let want: HashMap<u64, u32> = (0..3).map(|_| rx.recv().unwrap()).collect();
        let pthreads: Vec<u64> = want.keys().copied().collect();
        let got = kernel_tids(std::process::id(), &pthreads);
        drop(stop_tx);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(got, want);
    }
}
