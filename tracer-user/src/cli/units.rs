//! `scalp-bpf units RUN N [--group NAME]`: records how much work a run did (requests served, test
//! cases run), after the fact, so that `diff` compares per unit. For CI jobs that learn the count
//! only once the workload has finished, and for services without HTTP requests of their own
//! (workers, batch jobs): `--group` gives one service its own count.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use clap::Args;

use crate::{
    analysis::{AnalysisError, load::Run},
    exit::ExitCode,
};

#[derive(Debug, Args)]
pub struct UnitsArgs {
    /// A directory written by `scalp-bpf run`.
    pub run: PathBuf,
    /// Units of work the run did (> 0).
    #[arg(value_parser = parse_units, allow_hyphen_values = true)]
    pub units: f64,
    /// The units of one group (a service as `summary` and `diff` name it) instead of the run's.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

pub fn parse_units(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of units")),
    }
}

pub fn main(args: UnitsArgs) -> ExitCode {
    match set_units(&args.run, args.units, args.group.as_deref()) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            e.exit_code()
        }
    }
}

/// Rewrites `run.json` with `units` (for the run, or in `units_by_group` for one group),
/// atomically (a reader sees the old or the new file).
fn set_units(dir: &Path, units: f64, group: Option<&str>) -> Result<(), AnalysisError> {
    let mut meta = Run::metadata(dir)?;
    match group {
        None => meta["units"] = serde_json::json!(units),
        Some(g) => {
            if !meta.get("units_by_group").is_some_and(|v| v.is_object()) {
                meta["units_by_group"] = serde_json::json!({});
            }
            meta["units_by_group"][g] = serde_json::json!(units);
        }
    }
    let failed = |e: std::io::Error| AnalysisError::Corrupt {
        path: dir.join("run.json"),
        reason: format!("cannot rewrite: {e}"),
    };
    let tmp = dir.join(".run.json.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(failed)?;
    let mut text = serde_json::to_string_pretty(&meta).map_err(|e| failed(e.into()))?;
    text.push('\n');
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&tmp, dir.join("run.json")).map_err(failed)
}
