//! Run metadata: in `DIR/run.json` and in every Parquet file's key-value metadata.

use std::{fs, io, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use serde::Serialize;

/// Version of the table layouts; bumped when a column changes meaning or type.
pub const SCHEMA_VERSION: u32 = 1;

/// What a run was.
#[derive(Clone, Debug, Serialize)]
pub struct RunMetadata {
    pub tool: &'static str,
    pub tool_version: &'static str,
    pub schema_version: u32,
    pub host: String,
    pub kernel_release: String,
    pub kernel_version: String,
    pub arch: &'static str,
    pub boot_id: String,
    /// RFC 3339, UTC.
    pub run_start: String,
    /// RFC 3339, UTC; null while the run is going on (or if it was killed).
    pub run_end: Option<String>,
    /// scalp-bpf's own command line.
    pub command_line: Vec<String>,
    /// The `--pid` values.
    pub targets: Vec<String>,
    /// The command traced after `--`, if any.
    pub command: Vec<String>,
    pub interval_ns: u64,
    pub syscall_latency: String,
    /// Why the run ended (duration, signal, command exited, targets ended, error).
    pub end_reason: Option<String>,
    /// Exit code of the `--` command.
    pub command_exit_code: Option<i32>,
    /// (tracer, reason, count) of everything dropped; empty when nothing was lost.
    pub drops: Vec<DropTotal>,
    /// Units of work the run did (`--units`), for per-unit comparisons.
    pub units: Option<f64>,
    /// What each enabled tracer got on this kernel: where its programs are attached, the
    /// fallbacks it uses, what it loses, or why it could not run (as `scalp-bpf check` says).
    pub kernel_support: Vec<crate::kernel::support::TracerSupport>,
}

/// A run's name among many hosts' runs: its start time (UTC, to the microsecond) and the boot
/// id of its machine, e.g. `20261127T120405.123456Z-6f0c1e1a9b2c4d3e8f7a6b5c4d3e2f1a`.
pub fn run_id(run_start: &str, boot_id: &str) -> String {
    let stamp: String = run_start
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let boot: String = boot_id.chars().filter(char::is_ascii_hexdigit).collect();
    if boot.is_empty() {
        stamp
    } else {
        format!("{stamp}-{boot}")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DropTotal {
    pub tracer: String,
    pub reason: String,
    pub count: u64,
}

impl RunMetadata {
    /// Key-value pairs for Parquet files.
    pub fn key_values(&self) -> Vec<(String, String)> {
        let mut kv = vec![
            (
                "scalp.run".to_owned(),
                serde_json::to_string(self).unwrap_or_default(),
            ),
            (
                "scalp.tool_version".to_owned(),
                self.tool_version.to_owned(),
            ),
            (
                "scalp.schema_version".to_owned(),
                self.schema_version.to_string(),
            ),
            ("scalp.host".to_owned(), self.host.clone()),
            ("scalp.kernel".to_owned(), self.kernel_release.clone()),
            ("scalp.boot_id".to_owned(), self.boot_id.clone()),
            ("scalp.run_start".to_owned(), self.run_start.clone()),
            (
                "scalp.run_id".to_owned(),
                run_id(&self.run_start, &self.boot_id),
            ),
            ("scalp.command_line".to_owned(), self.command_line.join(" ")),
            ("scalp.targets".to_owned(), self.targets.join(",")),
        ];
        if let Some(end) = &self.run_end {
            kv.push(("scalp.run_end".to_owned(), end.clone()));
        }
        kv
    }

    /// Writes `dir/run.json` atomically (a reader sees the old or the new file, never half); a
    /// failed write leaves the old file and no temporary one.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(".run.json.tmp");
        let result = self.write_to(&tmp, &dir.join("run.json"));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_to(&self, tmp: &Path, path: &Path) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)?;
        let mut text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_are_compact_time_and_boot() {
        assert_eq!(
            super::run_id(
                "2026-11-27T12:04:05.123456Z",
                "6f0c1e1a-9b2c-4d3e-8f7a-6b5c4d3e2f1a\n"
            ),
            "20261127T120405.123456Z-6f0c1e1a9b2c4d3e8f7a6b5c4d3e2f1a"
        );
        assert_eq!(
            super::run_id("2026-11-27T12:04:05Z", ""),
            "20261127T120405Z"
        );
    }
}
