//! `--base`: what `diff BASE RUN` says, with its defaults and its verdicts, as the JSON `diff
//! --format json --all` prints — the page shows base and head side by side from it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ReportError;
use crate::analysis::{
    compare::{self, Comparison, Settings},
    diff_report::{self, Report},
    load::Run,
};

/// The comparison of `base` (at `base_dir`) with `head`, every key included.
pub fn compare(
    base_dir: &Path,
    base: &Run,
    head_dir: &Path,
    head: &Run,
) -> Result<Value, ReportError> {
    compare::comparable(base, head)?;
    let settings = Settings::defaults();
    let Comparison {
        mut changes,
        groups,
    } = compare::compare(std::slice::from_ref(base), head, &settings)?;
    diff_report::order(&mut changes);
    let bases = [base_dir.to_owned()];
    let head_dir: PathBuf = head_dir.to_owned();
    let report = Report {
        bases: &bases,
        head: &head_dir,
        settings: &settings,
        groups: &groups,
        regressed: changes.iter().any(|c| c.verdict.fails()),
        changes: &changes,
        all: true,
    };
    serde_json::from_str(&report.json()).map_err(|e| ReportError::Internal {
        what: format!("diff's JSON does not parse back: {e}"),
    })
}
