//! `scalp-bpf dump`: a Guru Meditation report of every process of a service, taken from outside
//! (nothing in the service, no signal): each thread's Python stack, kernel stack and state, open
//! files and sockets, memory, the config files on its command line with secrets masked, and the
//! Python packages it can import. A process is stopped only while its Python frames are read
//! (`python.paused_us` says how long).

pub mod config;
pub mod files;
pub mod packages;
pub mod python;
mod render;
pub mod threads;

use std::path::PathBuf;

use procfs::process::Process;
use serde::Serialize;

use crate::{
    cli::dump::{DumpArgs, Format},
    exit::ExitCode,
    targets::{self, TracedReason},
};

/// The whole report (`--format json`).
#[derive(Debug, Serialize)]
pub struct Dump {
    pub taken_at: String,
    pub hostname: String,
    pub processes: Vec<ProcessDump>,
}

#[derive(Debug, Serialize)]
pub struct ProcessDump {
    pub pid: u32,
    pub ppid: u32,
    /// Why it is in the report: the `--pid` it matched, or `descendant`.
    pub reason: String,
    pub command_line: Vec<String>,
    pub exe: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub memory: Memory,
    pub python: PythonInfo,
    pub threads: Vec<threads::ThreadDump>,
    pub files: Vec<files::OpenFile>,
    pub config_files: Vec<config::ConfigFile>,
    pub site_dirs: Vec<PathBuf>,
    pub packages: Vec<packages::Package>,
    /// Set when the process ended while it was being read.
    pub error: Option<String>,
}

/// From `/proc/PID/status`, in bytes.
#[derive(Debug, Default, Serialize)]
pub struct Memory {
    pub rss_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct PythonInfo {
    /// The CPython version, when the stacks could be read.
    pub version: Option<String>,
    pub paused_us: Option<u64>,
    /// Why there are no Python stacks.
    pub unavailable: Option<String>,
}

pub fn main(args: DumpArgs) -> ExitCode {
    let procs = targets::snapshot();
    let chosen = match targets::resolve(&args.pid, &procs, false) {
        Ok(chosen) => chosen,
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            return ExitCode::TargetNotFound;
        }
    };
    let dump = Dump {
        taken_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        processes: chosen
            .iter()
            .map(|(p, reason)| process(p, reason))
            .collect(),
    };
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&dump).map_err(|e| e.to_string()),
        Format::Text => Ok(render::text(&dump)),
    };
    match text {
        Ok(text) => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) ends the report quietly.
            let _ = writeln!(out, "{text}");
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("scalp-bpf: cannot render the report: {e}");
            ExitCode::Internal
        }
    }
}

fn process(info: &targets::procfs::ProcInfo, reason: &TracedReason) -> ProcessDump {
    let mut dump = ProcessDump {
        pid: info.pid,
        ppid: info.ppid,
        reason: match reason {
            TracedReason::Target(spec) => format!("--pid {spec}"),
            _ => "descendant".to_owned(),
        },
        command_line: info.argv.clone(),
        exe: None,
        cwd: None,
        memory: Memory::default(),
        python: PythonInfo::default(),
        threads: Vec::new(),
        files: Vec::new(),
        config_files: Vec::new(),
        site_dirs: Vec::new(),
        packages: Vec::new(),
        error: None,
    };
    let p = match Process::new(info.pid as i32) {
        Ok(p) => p,
        Err(e) => {
            dump.error = Some(e.to_string());
            return dump;
        }
    };
    dump.exe = p.exe().ok();
    dump.cwd = p.cwd().ok();
    if let Ok(s) = p.status() {
        let kb = |v: Option<u64>| v.map(|v| v * 1024);
        dump.memory = Memory {
            rss_bytes: kb(s.vmrss),
            rss_peak_bytes: kb(s.vmhwm),
            virtual_bytes: kb(s.vmsize),
            anon_bytes: kb(s.rssanon),
            file_bytes: kb(s.rssfile),
            shmem_bytes: kb(s.rssshmem),
            swap_bytes: kb(s.vmswap),
        };
    }
    let maps: Vec<PathBuf> = p
        .maps()
        .map(|m| {
            m.into_iter()
                .filter_map(|m| match m.pathname {
                    procfs::process::MMapPath::Path(p) => Some(p),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    dump.threads = threads::read(&p);
    let mut py_threads = Default::default();
    let mut version = None;
    let mut is_python = true;
    match python::stacks(info.pid) {
        Ok(stacks) => {
            dump.python.version = Some(stacks.version.clone());
            dump.python.paused_us = Some(stacks.paused_us);
            version = parse_version(&stacks.version);
            py_threads = stacks.threads;
        }
        Err(e) => {
            is_python = !matches!(e, python::PyError::NotPython);
            dump.python.unavailable = Some(e.to_string());
        }
    }
    threads::add_python(&mut dump.threads, &py_threads, info.pid);
    dump.files = files::read(&p);
    let cwd = dump.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
    dump.config_files = config::named_files(&info.argv, &cwd)
        .iter()
        .map(|f| config::read(f))
        .collect();
    if is_python {
        let env: Vec<(String, String)> = p
            .environ()
            .map(|env| {
                env.into_iter()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .filter(|(k, _)| {
                        matches!(
                            k.as_str(),
                            "PATH" | "PYTHONPATH" | "HOME" | "PYTHONNOUSERSITE"
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut seen = maps;
        seen.extend(
            py_threads
                .values()
                .flat_map(|t| t.frames.iter().map(|f| PathBuf::from(&f.file))),
        );
        let interp = packages::Interpreter {
            version,
            argv: &info.argv,
            exe: dump.exe.clone(),
            cwd: dump.cwd.clone(),
            env,
            seen,
        };
        dump.site_dirs = packages::site_dirs(&interp);
        dump.packages = packages::installed(&dump.site_dirs);
    }
    dump
}

/// `3.11.7` → (3, 11).
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
