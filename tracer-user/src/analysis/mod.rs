//! Reading runs back for `summary` and `diff`: the Parquet tables of a run directory, aggregated
//! per process group and key, with percentiles from the latency histograms.

pub mod aggregate;
pub mod attribution;
pub mod compare;
pub mod diff_report;
pub mod fleet;
pub mod load;
pub mod percentile;
pub mod series;
pub mod stats;

use crate::exit::ExitCode;

pub use crate::tracers::views::TableSpec;

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("{path} is not a scalp-bpf run (no run.json)")]
    NotARun { path: std::path::PathBuf },
    #[error("{path}: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{what}")]
    Incomparable { what: String },
    /// A flag value that only the run can refuse (a column it does not have).
    #[error("{what}")]
    Usage { what: String },
}

impl AnalysisError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AnalysisError::Incomparable { .. } => ExitCode::Incomparable,
            AnalysisError::Usage { .. } => ExitCode::Usage,
            _ => ExitCode::BadRun,
        }
    }
}
