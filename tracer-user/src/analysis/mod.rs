//! Reading runs back for `summary` and `diff`: the Parquet tables of a run directory, aggregated
//! per process group and key, with percentiles from the latency histograms.

pub mod aggregate;
pub mod compare;
pub mod fleet;
pub mod load;
pub mod percentile;

use crate::exit::ExitCode;

/// How each interval table is summarized: which columns identify a row's subject (keys), which
/// add up (counters) and which histogram gives its latency percentiles.
#[derive(Debug)]
pub struct TableSpec {
    pub table: &'static str,
    pub title: &'static str,
    pub keys: &'static [&'static str],
    pub counters: &'static [&'static str],
    /// The latency histogram, if the table has one.
    pub histogram: Option<&'static str>,
    /// The counter that orders rows by default.
    pub default_sort: &'static str,
}

/// Every table `summary` and `diff` know, in report order. Tables a run lacks are skipped.
pub const SPECS: &[TableSpec] = &[
    TableSpec {
        table: "syscalls",
        title: "System calls",
        keys: &["syscall_name"],
        counters: &["calls", "errors", "duration_ns_sum"],
        histogram: Some("duration_histogram"),
        default_sort: "calls",
    },
    TableSpec {
        table: "fileio",
        title: "File I/O",
        keys: &["file_kind", "op"],
        counters: &["calls", "errors", "bytes", "duration_ns_sum"],
        histogram: Some("duration_histogram"),
        default_sort: "bytes",
    },
    TableSpec {
        table: "blockio",
        title: "Block I/O",
        keys: &["device", "op", "attribution"],
        counters: &[
            "requests",
            "bytes",
            "errors",
            "queue_ns_sum",
            "device_ns_sum",
        ],
        histogram: Some("device_histogram"),
        default_sort: "bytes",
    },
    TableSpec {
        table: "sql_statements",
        title: "SQL statements",
        keys: &["db_system_name", "db_query_text", "db_response_status_code"],
        counters: &[
            "calls",
            "errors",
            "duration_ns_sum",
            "bytes_sent",
            "bytes_received",
        ],
        histogram: Some("duration_histogram"),
        default_sort: "calls",
    },
    TableSpec {
        table: "files",
        title: "Files",
        keys: &["file_path"],
        counters: &["read_bytes", "write_bytes", "reads", "writes"],
        histogram: None,
        default_sort: "write_bytes",
    },
];

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
