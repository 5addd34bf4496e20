//! The text form of a dump: one section per process, as oslo.reports' Guru Meditation Report
//! lays it out (threads, then files, then config, then packages).

use std::fmt::Write as _;

use super::{Dump, Memory, ProcessDump};
use crate::sink::budget::Size;

pub fn text(dump: &Dump) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scalp-bpf dump: {} process(es) on {} at {}",
        dump.processes.len(),
        dump.hostname,
        dump.taken_at
    );
    for p in &dump.processes {
        process(&mut out, p);
    }
    out
}

fn process(out: &mut String, p: &ProcessDump) {
    let rule = "=".repeat(78);
    let _ = writeln!(
        out,
        "\n{rule}\nProcess {} ({}), parent {}",
        p.pid, p.reason, p.ppid
    );
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "command: {}", p.command_line.join(" "));
    if let Some(exe) = &p.exe {
        let _ = writeln!(out, "exe:     {}", exe.display());
    }
    if let Some(cwd) = &p.cwd {
        let _ = writeln!(out, "cwd:     {}", cwd.display());
    }
    if let Some(e) = &p.error {
        let _ = writeln!(out, "error:   {e}");
        return;
    }
    let _ = writeln!(out, "memory:  {}", memory(&p.memory));
    match (&p.python.version, &p.python.unavailable) {
        (Some(v), _) => {
            let paused = p.python.paused_us.unwrap_or(0) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "python:  CPython {v} (stopped {paused:.1} ms to read the stacks)"
            );
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "python:  no stacks: {why}");
        }
        (None, None) => {}
    }

    let _ = writeln!(out, "\nThreads ({})", p.threads.len());
    for t in &p.threads {
        let mut head = format!("  Thread {} {:?} state {}", t.tid, t.name, t.state);
        if let Some(name) = &t.python_name {
            let _ = write!(head, ", Python thread {name:?}");
        }
        if t.owns_gil {
            head.push_str(", holds the GIL");
        }
        if let Some(w) = &t.wchan {
            let _ = write!(head, ", waits in {w}");
        }
        let _ = writeln!(out, "{head}");
        if let Some(frames) = &t.python_stack {
            let _ = writeln!(out, "    Python stack (innermost first):");
            for f in frames {
                let _ = writeln!(out, "      {} ({}:{})", f.function, f.file, f.line);
            }
        }
        if !t.kernel_stack.is_empty() {
            let _ = writeln!(out, "    Kernel stack:");
            for f in &t.kernel_stack {
                let _ = writeln!(out, "      {f}");
            }
        }
    }

    let _ = writeln!(out, "\nOpen files ({})", p.files.len());
    for f in &p.files {
        match &f.socket {
            Some(s) => {
                let peer = s
                    .remote
                    .as_deref()
                    .map(|r| format!(" -> {r}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {:>4} {} {}{peer} {}",
                    f.fd, s.protocol, s.local, s.state
                );
            }
            None => {
                let _ = writeln!(out, "  {:>4} {} {}", f.fd, f.kind, f.target);
            }
        }
    }

    if !p.config_files.is_empty() {
        let _ = writeln!(out, "\nConfiguration (secrets masked)");
        for c in &p.config_files {
            let _ = writeln!(out, "  --- {}", c.path.display());
            match (&c.text, &c.error) {
                (Some(text), _) => {
                    for line in text.lines() {
                        let _ = writeln!(out, "  {line}");
                    }
                }
                (None, Some(e)) => {
                    let _ = writeln!(out, "  (not read: {e})");
                }
                (None, None) => {}
            }
        }
    }

    if !p.site_dirs.is_empty() {
        let _ = writeln!(out, "\nPython packages ({})", p.packages.len());
        for d in &p.site_dirs {
            let _ = writeln!(out, "  from {}", d.display());
        }
        for pkg in &p.packages {
            let _ = writeln!(out, "  {} {}", pkg.name, pkg.version);
        }
    }
}

fn memory(m: &Memory) -> String {
    let show = |label: &str, v: Option<u64>| v.map(|v| format!("{label} {}", Size(v)));
    [
        show("rss", m.rss_bytes),
        show("peak rss", m.rss_peak_bytes),
        show("virtual", m.virtual_bytes),
        show("anon", m.anon_bytes),
        show("file", m.file_bytes),
        show("shmem", m.shmem_bytes),
        show("swap", m.swap_bytes),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}
