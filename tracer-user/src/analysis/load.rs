//! Loading runs: a run directory (its sealed Parquet files plus the intervals still in its
//! write-ahead log, so that a live or killed run reads at once), or many runs together — a
//! directory of run directories, or a Hive root that `run --ship`/`ship` filled
//! ([`super::fleet`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    path::{Path, PathBuf},
};

use arrow_array::{
    Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::AnalysisError;
use crate::sink::{
    layout,
    wal::{OpenError, WalReader},
};

/// Columns [`super::fleet`] adds to every batch of a run read with others: its host and its
/// run id, so that processes of different hosts never mix.
pub const HOST_COLUMN: &str = "host";
pub const RUN_COLUMN: &str = "run";

/// One of several runs read together.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its directory, or its run id in a Hive layout.
    pub label: String,
    pub host: String,
    pub meta: serde_json::Value,
}

/// A run read back (or several, see [`Run::members`]).
pub struct Run {
    pub dir: PathBuf,
    pub meta: serde_json::Value,
    /// Table name → its batches (every part, in part order, then the unsealed intervals).
    pub tables: BTreeMap<String, Vec<RecordBatch>>,
    /// Intervals whose rows were read from write-ahead logs (not sealed yet: the run is live or
    /// was killed).
    pub unsealed: u64,
    /// The runs read together (empty for a single run); their batches carry [`HOST_COLUMN`]
    /// and [`RUN_COLUMN`].
    pub members: Vec<Member>,
}

fn seconds_of(meta: &serde_json::Value) -> Option<f64> {
    let at = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .and_then(|s| humantime::parse_rfc3339(s).ok())
    };
    let (start, end) = (at("run_start")?, at("run_end")?);
    end.duration_since(start).ok().map(|d| d.as_secs_f64())
}

impl Run {
    /// Reads and checks `dir/run.json`.
    pub fn metadata(dir: &Path) -> Result<serde_json::Value, AnalysisError> {
        let meta_path = dir.join("run.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|_| AnalysisError::NotARun {
            path: dir.to_owned(),
        })?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| AnalysisError::Corrupt {
                path: meta_path.clone(),
                reason: format!("not valid JSON: {e}"),
            })?;
        if meta.get("tool").and_then(|t| t.as_str()) != Some("scalp-bpf") {
            return Err(AnalysisError::NotARun {
                path: dir.to_owned(),
            });
        }
        Ok(meta)
    }

    /// Reads a run directory, or — when `dir` has no run.json — the runs under it (run
    /// directories, or a Hive layout of shipped files).
    pub fn load(dir: &Path) -> Result<Run, AnalysisError> {
        if !dir.join("run.json").exists()
            && let Some(run) = super::fleet::load(dir)?
        {
            return Ok(run);
        }
        Run::load_one(dir)
    }

    /// Reads `dir/run.json`, every `dir/<table>/*.parquet`, and the committed intervals of
    /// `dir/.wal/*.wal` whose part is not sealed yet.
    pub fn load_one(dir: &Path) -> Result<Run, AnalysisError> {
        let meta = Run::metadata(dir)?;
        // Logs first: a log sealed (and deleted) meanwhile stays readable through its open
        // descriptor, and its part, if listed below, is read instead of it — never both.
        let logs: Vec<(u32, PathBuf, File)> = layout::wals(dir)
            .into_iter()
            .filter_map(|(seq, path)| File::open(&path).ok().map(|f| (seq, path, f)))
            .collect();
        let mut tables = BTreeMap::new();
        let mut listed: BTreeSet<(String, String)> = BTreeSet::new();
        let entries = std::fs::read_dir(dir).map_err(|e| AnalysisError::Corrupt {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let sub = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !sub.is_dir() || name.starts_with('.') {
                continue;
            }
            let parts = layout::parts(&sub);
            if parts.is_empty() {
                continue;
            }
            let mut batches = Vec::new();
            for part in &parts {
                batches.extend(read_part(part)?);
                if let Some(file) = part.file_name() {
                    listed.insert((name.clone(), file.to_string_lossy().into_owned()));
                }
            }
            tables.insert(name, batches);
        }
        let mut unsealed = 0;
        for (seq, path, file) in logs {
            let corrupt = |reason: String| AnalysisError::Corrupt {
                path: path.clone(),
                reason,
            };
            let mut reader = match WalReader::open(file) {
                Ok(r) => r,
                Err(OpenError::Empty) => continue,
                Err(OpenError::Corrupt(reason)) => return Err(corrupt(reason)),
                Err(OpenError::Io(e)) => return Err(corrupt(e.to_string())),
            };
            let names: Vec<String> = reader.tables().iter().map(|(t, _)| t.clone()).collect();
            let sealed: Vec<bool> = names
                .iter()
                .map(|t| listed.contains(&(t.clone(), layout::part_name(seq))))
                .collect();
            for t in &names {
                tables.entry(t.clone()).or_insert_with(Vec::new);
            }
            while let Some(group) = reader.next_group() {
                let mut taken = false;
                for (t, batch) in group {
                    if !sealed[t] {
                        tables.entry(names[t].clone()).or_default().push(batch);
                        taken = true;
                    }
                }
                unsealed += u64::from(taken);
            }
        }
        Ok(Run {
            dir: dir.to_owned(),
            meta,
            tables,
            unsealed,
            members: Vec::new(),
        })
    }

    /// Seconds the run traced (run_end - run_start), if both are known; for runs read
    /// together, the sum of theirs.
    pub fn seconds(&self) -> Option<f64> {
        if self.members.is_empty() {
            return seconds_of(&self.meta);
        }
        self.members.iter().map(|m| seconds_of(&m.meta)).sum()
    }

    /// Units of work the run recorded (`--units` or `scalp-bpf units`); for runs read
    /// together, the sum when every one recorded them.
    pub fn units(&self) -> Option<f64> {
        let of = |m: &serde_json::Value| m.get("units").and_then(|v| v.as_f64());
        if self.members.is_empty() {
            return of(&self.meta);
        }
        self.members.iter().map(|m| of(&m.meta)).sum()
    }
}

pub fn read_part(path: &Path) -> Result<Vec<RecordBatch>, AnalysisError> {
    let corrupt = |reason: String| AnalysisError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|e| corrupt(e.to_string()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| corrupt(format!("not a readable Parquet file ({e})")))?
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(format!("unreadable data ({e})")))
}

/// A column's values as strings (nulls as "").
pub fn strings(batch: &RecordBatch, name: &str) -> Option<Vec<String>> {
    let col = batch.column_by_name(name)?;
    if let Some(a) = col.as_any().downcast_ref::<Int32Array>() {
        // An integer key (a line number): shown as its digits, null as empty.
        return Some(
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        String::new()
                    } else {
                        a.value(i).to_string()
                    }
                })
                .collect(),
        );
    }
    let a = col.as_any().downcast_ref::<StringArray>()?;
    Some(
        (0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    String::new()
                } else {
                    a.value(i).to_owned()
                }
            })
            .collect(),
    )
}

/// A column's integer (or timestamp) values.
pub fn ints(batch: &RecordBatch, name: &str) -> Option<Vec<Option<i64>>> {
    let col = batch.column_by_name(name)?;
    let any = col.as_any();
    let get = |len: usize, null: &dyn Fn(usize) -> bool, v: &dyn Fn(usize) -> i64| {
        (0..len).map(|i| (!null(i)).then(|| v(i))).collect()
    };
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Some(get(a.len(), &|i| a.is_null(i), &|i| a.value(i)));
    }
    if let Some(a) = any.downcast_ref::<Int32Array>() {
        return Some(get(a.len(), &|i| a.is_null(i), &|i| i64::from(a.value(i))));
    }
    if let Some(a) = any.downcast_ref::<TimestampMicrosecondArray>() {
        return Some(get(a.len(), &|i| a.is_null(i), &|i| a.value(i)));
    }
    None
}

/// A `list<int64>` column's values.
pub fn lists(batch: &RecordBatch, name: &str) -> Option<Vec<Vec<i64>>> {
    let col = batch.column_by_name(name)?;
    let a = col.as_any().downcast_ref::<ListArray>()?;
    (0..a.len())
        .map(|i| {
            let v = a.value(i);
            let ints = v.as_any().downcast_ref::<Int64Array>()?;
            Some(ints.iter().map(|x| x.unwrap_or(0)).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::sink::{
        seal::{SealOptions, seal},
        wal::{
            WalWriter,
            tests::{batch, schema, scratch},
        },
    };

    fn log(root: &Path, seq: u32, rows: &[i64]) -> PathBuf {
        let path = root.join(layout::WAL_DIR).join(layout::wal_name(seq));
        let mut w = WalWriter::create(&path, &[], &[("a", schema()), ("b", schema())]).unwrap();
        for (i, n) in rows.iter().enumerate() {
            w.append(0, &batch(i as i64 * 100, *n)).unwrap();
            w.commit().unwrap();
        }
        drop(w.close());
        path
    }

    fn rows(run: &Run, table: &str) -> usize {
        run.tables
            .get(table)
            .map_or(0, |b| b.iter().map(RecordBatch::num_rows).sum())
    }

    #[test]
    fn a_killed_run_reads_its_parts_and_its_logs_each_row_once() {
        let root = scratch("load-killed");
        fs::write(root.join("run.json"), r#"{"tool": "scalp-bpf"}"#).unwrap();
        fs::create_dir_all(root.join(layout::WAL_DIR)).unwrap();
        // Period 1 sealed; its log still there, as in the moment between the rename of its
        // parts and its deletion. Period 2 only in its log.
        let first = log(&root, 1, &[3, 4]);
        let copy = fs::read(&first).unwrap();
        seal(
            &root,
            1,
            &first,
            &SealOptions {
                extra: &[],
                schema_parts: false,
            },
        )
        .unwrap();
        fs::write(&first, copy).unwrap();
        log(&root, 2, &[5, 6, 7]);
        let run = Run::load(&root).unwrap();
        assert_eq!(rows(&run, "a"), 3 + 4 + 5 + 6 + 7);
        // b has no rows, but its schema is known from the logs: the table is there.
        assert_eq!(run.tables.get("b").map(Vec::len), Some(0));
        assert_eq!(run.unsealed, 3);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_damaged_log_is_a_corrupt_file_not_a_panic() {
        let root = scratch("load-bad-log");
        fs::write(root.join("run.json"), r#"{"tool": "scalp-bpf"}"#).unwrap();
        fs::create_dir_all(root.join(layout::WAL_DIR)).unwrap();
        fs::write(
            root.join(layout::WAL_DIR).join(layout::wal_name(1)),
            b"junk",
        )
        .unwrap();
        match Run::load(&root) {
            Err(AnalysisError::Corrupt { path, reason }) => {
                assert!(path.ends_with(".wal/00000001.wal"), "{path:?}");
                assert_eq!(reason, "not a scalp-bpf write-ahead log");
            }
            other => panic!("{:?}", other.map(|r| r.dir)),
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
