//! `scalp-bpf report`: one self-contained HTML page of a run — per service, timelines over the
//! run, latency histograms, StackTach-style tables and top talkers; the machine's own timelines
//! when the run has a `system` table; with a base run, `diff`'s verdicts side by side.
//!
//! The data is read by `analysis` (what `summary` and `diff` read), shaped here
//! ([`tables`], [`timelines`], [`system`], [`compare`]) into one JSON document, and inlined
//! with uPlot and the page's own script by [`page`].

mod compare;
mod page;
mod system;
mod tables;
mod timelines;

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

use crate::{
    analysis::{AnalysisError, aggregate::Groups, load::Run, series::Frame},
    exit::ExitCode,
};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A run cannot be read, or the runs cannot be compared.
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    /// The page cannot be written where asked.
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A bug: something the code itself produced did not read back.
    #[error("internal error: {what}")]
    Internal { what: String },
}

impl ReportError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ReportError::Analysis(e) => e.exit_code(),
            ReportError::Output { .. } => ExitCode::OutputUnusable,
            ReportError::Internal { .. } => ExitCode::Internal,
        }
    }
}

/// One service's part of the page.
#[derive(Default)]
pub struct Service {
    pub timelines: Vec<Value>,
    pub tables: Vec<Value>,
    pub histograms: Vec<Value>,
    pub talkers: Value,
}

/// Services by name.
pub type Services = BTreeMap<String, Service>;

/// What was written.
pub struct Written {
    pub bytes: usize,
    pub services: usize,
    pub intervals: usize,
}

/// The page's data: the run, its services, its `system` section and the comparison.
pub fn document(
    run_dir: &Path,
    run: &Run,
    base: Option<(&Path, &Run)>,
) -> Result<Value, ReportError> {
    let frame = Frame::of(run)?;
    let groups = Groups::of(run, false);
    let mut services = Services::new();
    let aggregated = tables::tables(run, &groups, &mut services)?;
    timelines::timelines(run, &frame, &groups, &mut services)?;
    tables::talkers(run, &aggregated, &mut services)?;
    // Busiest service first, as `summary` orders its groups.
    let calls = |s: &Service| -> i64 {
        s.tables
            .iter()
            .find(|t| t["table"] == "syscalls")
            .and_then(|t| t["rows"].as_array())
            .map_or(0, |rows| {
                rows.iter()
                    .map(|r| r["counters"]["calls"].as_i64().unwrap_or(0))
                    .sum()
            })
    };
    let mut ordered: Vec<(String, Service)> = services.into_iter().collect();
    ordered.sort_by(|a, b| calls(&b.1).cmp(&calls(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let comparison = match base {
        Some((dir, b)) => Some(compare::compare(dir, b, run_dir, run)?),
        None => None,
    };
    let processes = run
        .tables
        .get("processes")
        .map_or(0, |b| b.iter().map(|b| b.num_rows()).sum::<usize>());
    Ok(json!({
        "run": run_dir.display().to_string(),
        "base": base.map(|(d, _)| d.display().to_string()),
        "seconds": run.seconds(),
        "run_start": run.meta.get("run_start"),
        "run_end": run.meta.get("run_end"),
        "hosts": run.meta.get("hosts"),
        "drops": run.meta.get("drops"),
        "unsealed_intervals": run.unsealed,
        "processes": processes,
        "version": env!("CARGO_PKG_VERSION"),
        "limits": {"rows": tables::MAX_ROWS, "talkers": tables::TALKERS},
        "t": timelines::axis(&frame),
        "services": ordered.into_iter().map(|(name, s)| json!({
            "name": name,
            "timelines": s.timelines,
            "tables": s.tables,
            "histograms": s.histograms,
            "talkers": s.talkers,
        })).collect::<Vec<_>>(),
        "system": system::system(run, &frame.starts),
        "diff": comparison,
    }))
}

/// Reads the run (and the base run), builds the page and writes it to `output` (through a
/// temporary file in the same directory, renamed: never half a page).
pub fn write(run_dir: &Path, base: Option<&Path>, output: &Path) -> Result<Written, ReportError> {
    let run = Run::load(run_dir)?;
    let base_run = base.map(Run::load).transpose()?;
    let doc = document(run_dir, &run, base.zip(base_run.as_ref()))?;
    let title = format!("scalp-bpf report — {}", run_dir.display());
    let html = page::html(&title, &doc);
    let out_err = |source| ReportError::Output {
        path: output.to_owned(),
        source,
    };
    let name = output
        .file_name()
        .ok_or_else(|| out_err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    let tmp = output.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(html.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, output));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(out_err(e));
    }
    Ok(Written {
        bytes: html.len(),
        services: doc["services"].as_array().map_or(0, Vec::len),
        intervals: doc["t"].as_array().map_or(0, Vec::len),
    })
}
