//! A process's threads as the kernel sees them: name, state, what it waits in (`wchan`) and
//! its kernel stack (`/proc/PID/task/TID/stack`, root only; empty where the kernel hides it).

use std::{collections::HashMap, fs};

use serde::Serialize;

use super::python::{PyFrame, PyThread};

#[derive(Debug, Serialize)]
pub struct ThreadDump {
    pub tid: u32,
    /// `comm`.
    pub name: String,
    /// R, S, D, T, Z… as in `ps`.
    pub state: String,
    pub wchan: Option<String>,
    pub kernel_stack: Vec<String>,
    /// `threading`'s name, when the thread runs Python.
    pub python_name: Option<String>,
    pub owns_gil: bool,
    /// Innermost frame first; `None` for a thread with no Python state.
    pub python_stack: Option<Vec<PyFrame>>,
}

/// Every thread of `pid` as the kernel sees it; read before the Python stacks, whose reading
/// stops the threads and would show in their state and kernel stacks.
pub fn read(process: &procfs::process::Process) -> Vec<ThreadDump> {
    let Ok(tasks) = process.tasks() else {
        return Vec::new();
    };
    let mut out: Vec<ThreadDump> = tasks
        .flatten()
        .map(|task| {
            let tid = task.tid as u32;
            let stat = task.stat().ok();
            let dir = format!("/proc/{}/task/{tid}", task.pid);
            ThreadDump {
                tid,
                name: stat.as_ref().map(|s| s.comm.clone()).unwrap_or_default(),
                state: stat.map(|s| s.state.to_string()).unwrap_or_default(),
                wchan: fs::read_to_string(format!("{dir}/wchan"))
                    .ok()
                    .filter(|w| !w.is_empty() && w != "0"),
                kernel_stack: fs::read_to_string(format!("{dir}/stack"))
                    .map(|s| kernel_frames(&s))
                    .unwrap_or_default(),
                python_name: None,
                owns_gil: false,
                python_stack: None,
            }
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

/// Gives each thread the Python state read for it, if any. A process forked from C after
/// Python started (uWSGI's workers) keeps its parent's thread id in its one thread state: a
/// single Python thread that names none of the process's threads is its main thread's (`pid`).
pub fn add_python(threads: &mut [ThreadDump], python: &HashMap<u32, PyThread>, pid: u32) {
    let stray: Vec<&PyThread> = python
        .iter()
        .filter(|(tid, _)| !threads.iter().any(|t| t.tid == **tid))
        .map(|(_, py)| py)
        .collect();
    let main_thread = match stray.as_slice() {
        [only] if python.len() == 1 => Some(*only),
        _ => None,
    };
    for t in threads {
        let py = python.get(&t.tid).or(main_thread.filter(|_| t.tid == pid));
        if let Some(py) = py {
            t.python_name = py.name.clone();
            t.owns_gil = py.owns_gil;
            t.python_stack = Some(py.frames.clone());
        }
    }
}

/// `[<0>] do_sys_poll+0x3a/0x60` lines → `do_sys_poll+0x3a/0x60`.
fn kernel_frames(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.split_once("] ") {
            Some((_, f)) => f.trim().to_owned(),
            None => l.trim().to_owned(),
        })
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(tid: u32) -> ThreadDump {
        ThreadDump {
            tid,
            name: String::new(),
            state: "S".to_owned(),
            wchan: None,
            kernel_stack: Vec::new(),
            python_name: None,
            owns_gil: false,
            python_stack: None,
        }
    }

    fn py(function: &str) -> PyThread {
        PyThread {
            name: None,
            owns_gil: false,
            frames: vec![PyFrame {
                function: function.to_owned(),
                file: "app.py".to_owned(),
                line: 3,
            }],
        }
    }

    #[test]
    fn a_forked_workers_one_python_thread_is_its_main_threads() {
        // The worker (pid 20) kept its master's id (10) in its one thread state.
        let mut threads = [thread(20), thread(21)];
        add_python(&mut threads, &HashMap::from([(10, py("handler"))]), 20);
        assert_eq!(
            threads[0].python_stack.as_ref().unwrap()[0].function,
            "handler"
        );
        assert!(threads[1].python_stack.is_none());
        // Two Python threads, one of them stray: nothing is guessed.
        let mut threads = [thread(20), thread(21)];
        add_python(
            &mut threads,
            &HashMap::from([(10, py("a")), (21, py("b"))]),
            20,
        );
        assert!(threads[0].python_stack.is_none());
        assert_eq!(threads[1].python_stack.as_ref().unwrap()[0].function, "b");
    }

    #[test]
    fn kernel_stack_lines_lose_their_address() {
        assert_eq!(
            super::kernel_frames("[<0>] futex_wait_queue+0x60/0x90\n[<0>] do_futex+0x11/0x20\n"),
            ["futex_wait_queue+0x60/0x90", "do_futex+0x11/0x20"]
        );
    }
}
