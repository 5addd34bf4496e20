//! `scalp-bpf check`: what each tracer gets on the running kernel — ok, degraded (how) or
//! unavailable (why) — decided by the loader's own tables (`loader::survey`: the probe rows and
//! the tracers' choices), with every tracer enabled; then, as root on the running kernel, every
//! program the run would attach is loaded by the verifier (not attached), so the table is the
//! kernel's word, not only a prediction from its BTF. Exit 0 when the core (process tracking and
//! the syscall counts) works, 4 when it does not.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::{
    exit::ExitCode,
    kernel::{
        self,
        btf::{BtfError, DEFAULT_PATH, KernelBtf},
        privileges,
        support::{Status, TracerSupport},
    },
    loader::{self, LoadError, Mode},
    settings::{LatencyMode, Settings},
    tracers,
};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Decide from this BTF file instead of the running kernel's (a prediction for that kernel:
    /// nothing is loaded; the architecture is this machine's).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub kernel_btf: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// The report, as `--format json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    kernel_release: String,
    arch: &'static str,
    btf: PathBuf,
    /// Whether the verifier loaded the programs (else the table is decided from BTF alone).
    verified: bool,
    /// Why not, when not.
    not_verified_because: Option<String>,
    /// Whether process tracking and the syscall counts work.
    core_ok: bool,
    tracers: Vec<TracerSupport>,
}

/// Every tracer and option on: what `check` asks the kernel about.
fn everything() -> Settings {
    let mut s = Settings::minimal();
    s.tracers = tracers::selectable()
        .into_iter()
        .map(str::to_owned)
        .collect();
    s.syscall_latency = LatencyMode::Auto { target: 1000 };
    s.watch_exec = true;
    s.files = Some(20);
    s.block_fallback = crate::settings::block_devices_without_iostats();
    s
}

pub fn main(args: CheckArgs) -> ExitCode {
    match report(&args) {
        Ok(report) => {
            match args.format {
                Format::Json => match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("scalp-bpf: cannot write the report: {e}");
                        return ExitCode::Internal;
                    }
                },
                Format::Table => print!("{}", table(&report)),
            }
            if report.core_ok {
                ExitCode::Ok
            } else {
                ExitCode::KernelUnsupported
            }
        }
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            match e {
                CheckError::Btf(_) => ExitCode::KernelUnsupported,
                CheckError::Load(e) => e.exit_code(),
            }
        }
    }
}

fn report(args: &CheckArgs) -> Result<Report, CheckError> {
    let settings = everything();
    let kbtf = KernelBtf::open(&args.kernel_btf)?;
    let plan = loader::survey(&settings, &kbtf)?;
    let arch = plan.setup.arch.name();
    let running = args.kernel_btf == std::path::Path::new(DEFAULT_PATH);
    let not_verified_because = if !running {
        Some("not the running kernel's BTF".to_owned())
    } else if let Err(e) = privileges::check() {
        Some(format!("not allowed to load programs ({e})"))
    } else if !loader::core_ok(&plan.support) {
        Some("the core cannot run".to_owned())
    } else {
        None
    };
    let support = if not_verified_because.is_none() {
        loader::load_plan(plan, Mode::VerifyOnly)?.1.support
    } else {
        plan.support
    };
    Ok(Report {
        kernel_release: if running {
            kernel::release_and_version().0
        } else {
            "unknown".to_owned()
        },
        arch,
        btf: args.kernel_btf.clone(),
        verified: not_verified_because.is_none(),
        not_verified_because,
        core_ok: loader::core_ok(&support),
        tracers: support,
    })
}

/// The terminal table: one block per tracer, its status, then what it uses or loses.
fn table(r: &Report) -> String {
    let mut out = format!(
        "kernel {} ({}), BTF {}: {}\n",
        r.kernel_release,
        r.arch,
        r.btf.display(),
        match &r.not_verified_because {
            None => "every program below was loaded by the verifier".to_owned(),
            Some(why) => format!("decided from BTF only, nothing loaded ({why})"),
        }
    );
    let width = r.tracers.iter().map(|s| s.tracer.len()).max().unwrap_or(6) + 2;
    out += &format!("{:<width$}{:<13}details\n", "tracer", "status");
    for s in &r.tracers {
        let mut lines: Vec<String> = Vec::new();
        if let Some(why) = &s.why {
            lines.push(format!("why: {why}"));
        }
        lines.extend(s.lost.iter().map(|l| format!("loses: {l}")));
        lines.extend(s.fallbacks.iter().map(|f| format!("fallback: {f}")));
        lines.extend(
            s.uses
                .iter()
                .filter(|u| u.best)
                .filter_map(|u| u.way.map(|way| format!("uses: {}: {way}", u.what))),
        );
        if !s.attached.is_empty() && s.status != Status::Unavailable {
            let names: Vec<String> = s
                .attached
                .iter()
                .map(|a| {
                    if a.program == a.tracepoint {
                        a.program.to_owned()
                    } else {
                        format!("{} on {}", a.program, a.tracepoint)
                    }
                })
                .collect();
            lines.push(format!("attached: {}", names.join(", ")));
        }
        let status = s.status.name();
        let mut first = true;
        for line in lines
            .iter()
            .map(String::as_str)
            .chain(lines.is_empty().then_some(""))
        {
            if first {
                out += &format!("{:<width$}{status:<13}{line}\n", s.tracer);
                first = false;
            } else {
                out += &format!("{:<width$}{:<13}{line}\n", "", "");
            }
        }
    }
    out += &format!(
        "core (process tracking, syscall counts): {}\n",
        if r.core_ok { "ok" } else { "unavailable" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::support::Attached;

    #[test]
    fn every_tracer_and_option_is_asked_about() {
        let s = everything();
        let names: Vec<&str> = tracers::enabled(&s).iter().map(|r| r.name).collect();
        let all: Vec<&str> = tracers::REGISTRY.iter().map(|r| r.name).collect();
        assert_eq!(names, all);
        assert!(s.syscall_latency.measures(), "sys_enter is asked about");
    }

    #[test]
    fn the_table_says_what_each_tracer_uses_or_why_not() {
        let mut blockio = TracerSupport::new("blockio");
        blockio.attached = vec![
            Attached {
                program: "block_rq_insert",
                tracepoint: "block_rq_insert",
            },
            Attached {
                program: "writeback_dirty_folio",
                tracepoint: "writeback_dirty_page",
            },
        ];
        blockio.fallbacks = vec!["x stand in for y".into()];
        let mut sql = TracerSupport::new("sql");
        sql.refuse("it works through sockets, which cannot run".into());
        let r = Report {
            kernel_release: "5.10.0-32-amd64".into(),
            arch: "x86_64",
            btf: DEFAULT_PATH.into(),
            verified: true,
            not_verified_because: None,
            core_ok: true,
            tracers: vec![TracerSupport::new("syscalls"), blockio, sql],
        };
        assert_eq!(
            table(&r),
            "kernel 5.10.0-32-amd64 (x86_64), BTF /sys/kernel/btf/vmlinux: every program below \
             was loaded by the verifier\n\
             tracer    status       details\n\
             syscalls  ok           \n\
             blockio   ok           fallback: x stand in for y\n\
             \x20                      attached: block_rq_insert, writeback_dirty_folio on \
             writeback_dirty_page\n\
             sql       unavailable  why: it works through sockets, which cannot run\n\
             core (process tracking, syscall counts): ok\n"
        );
    }
}
