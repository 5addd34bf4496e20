//! Whether a process runs CPython, which version, and where its interpreter state is.

use std::{fs, path::Path};

/// What a process's executable and libraries say.
#[derive(Debug)]
pub enum Found {
    NotPython,
    /// CPython whose state could not be found or read: why.
    Unsupported(String),
    Python {
        major: u64,
        minor: u64,
        interp: u64,
    },
}

/// Whether a process runs CPython: its executable or a mapped library is called `python*` or
/// `libpython*`, or its executable defines `_PyRuntime` (a renamed or embedding build). Only
/// such processes are ever read (or stopped, by `dump`).
pub fn is_cpython(pid: u32) -> bool {
    let named = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("python") || n.starts_with("libpython"))
    };
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
    if exe.as_deref().is_some_and(named) {
        return true;
    }
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    if maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .any(|p| named(Path::new(p)))
    {
        return true;
    }
    exe.is_some() && defines_runtime(pid)
}

/// Whether the process's executable (read through /proc) names CPython's runtime state.
fn defines_runtime(pid: u32) -> bool {
    const SYMBOL: &[u8] = b"_PyRuntime\0";
    fs::read(format!("/proc/{pid}/exe"))
        .is_ok_and(|bytes| bytes.windows(SYMBOL.len()).any(|w| w == SYMBOL))
}

/// The interpreter of `pid`, found by py-spy's reader (symbols, else a scan of its memory).
pub fn interpreter(pid: u32) -> Found {
    if !is_cpython(pid) {
        return Found::NotPython;
    }
    let config = py_spy::Config::default();
    match py_spy::PythonSpy::new(pid as py_spy::Pid, &config) {
        Ok(spy) => Found::Python {
            major: spy.version.major,
            minor: spy.version.minor,
            interp: spy.addresses.interpreter_address as u64,
        },
        Err(e) => Found::Unsupported(e.to_string().lines().next().unwrap_or_default().to_owned()),
    }
}
