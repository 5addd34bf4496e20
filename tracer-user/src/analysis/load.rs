//! Loading a run directory.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use arrow_array::{
    Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::AnalysisError;

/// A run read back.
pub struct Run {
    pub dir: PathBuf,
    pub meta: serde_json::Value,
    /// Table name → its batches (every part, in part order).
    pub tables: BTreeMap<String, Vec<RecordBatch>>,
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

    /// Reads `dir/run.json` and every `dir/<table>/*.parquet`.
    pub fn load(dir: &Path) -> Result<Run, AnalysisError> {
        let meta = Run::metadata(dir)?;
        let mut tables = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| AnalysisError::Corrupt {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let sub = entry.path();
            if !sub.is_dir() {
                continue;
            }
            let mut parts: Vec<PathBuf> = std::fs::read_dir(&sub)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                        .filter(|p| {
                            !p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if parts.is_empty() {
                continue;
            }
            parts.sort();
            let mut batches = Vec::new();
            for part in &parts {
                batches.extend(read_part(part)?);
            }
            let name = sub
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tables.insert(name, batches);
        }
        Ok(Run {
            dir: dir.to_owned(),
            meta,
            tables,
        })
    }

    /// Seconds the run traced (run_end - run_start), if both are known.
    pub fn seconds(&self) -> Option<f64> {
        let at = |k: &str| {
            self.meta
                .get(k)
                .and_then(|v| v.as_str())
                .and_then(|s| humantime::parse_rfc3339(s).ok())
        };
        let (start, end) = (at("run_start")?, at("run_end")?);
        end.duration_since(start).ok().map(|d| d.as_secs_f64())
    }

    /// Units of work the run recorded (`--units` or `scalp-bpf units`).
    pub fn units(&self) -> Option<f64> {
        self.meta.get("units").and_then(|v| v.as_f64())
    }
}

fn read_part(path: &Path) -> Result<Vec<RecordBatch>, AnalysisError> {
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
