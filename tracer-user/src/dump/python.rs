//! Every thread's Python stack, read from the interpreter's memory (py-spy's reader: the
//! interpreter found from its binary's symbols, version-specific struct layouts, frames walked
//! with `process_vm_readv`). The process is stopped only while its threads' frames are read.

use std::{collections::HashMap, time::Instant};

use serde::Serialize;

use crate::python::detect;

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
    let threads = traces
        .into_iter()
        .filter_map(|t| {
            let tid = u32::try_from(t.os_thread_id?).ok()?;
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

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}
