//! Many runs read as one, for `summary` and `diff` over a fleet: a directory of run
//! directories, or a Hive root filled by `run --ship` / `ship`
//! (`table=T/date=D/host=H/<run id>-<period>.parquet`). Every batch gets the run's host and run
//! id as columns ([`HOST_COLUMN`], [`RUN_COLUMN`]), so processes are grouped per host and a PID
//! of one run is never mistaken for the same PID of another; counts add up across runs, and so
//! do the seconds traced and the units of work (rates are per host-second).

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;

use super::{
    AnalysisError,
    load::{HOST_COLUMN, Member, RUN_COLUMN, Run},
};

/// One run's tables, before they are put together.
struct Loaded {
    member: Member,
    tables: BTreeMap<String, Vec<RecordBatch>>,
    unsealed: u64,
}

/// The runs under `dir`, read as one; `None` when there are none (not a fleet).
pub fn load(dir: &Path) -> Result<Option<Run>, AnalysisError> {
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    let runs: Vec<&PathBuf> = subdirs
        .iter()
        .filter(|p| p.join("run.json").is_file())
        .collect();
    let loaded = if !runs.is_empty() {
        let mut out = Vec::new();
        for d in runs {
            let run = Run::load_one(d)?;
            out.push(Loaded {
                member: Member {
                    label: d.display().to_string(),
                    host: run
                        .meta
                        .get("host")
                        .and_then(|h| h.as_str())
                        .unwrap_or("")
                        .to_owned(),
                    meta: run.meta,
                },
                tables: run.tables,
                unsealed: run.unsealed,
            });
        }
        out
    } else if subdirs.iter().any(|p| hive_value(p, "table").is_some()) {
        hive(dir)?
    } else {
        return Ok(None);
    };
    combine(dir, loaded).map(Some)
}

/// `key=value` of a path's last component.
fn hive_value(path: &Path, key: &str) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    name.strip_prefix(key)?.strip_prefix('=').map(str::to_owned)
}

/// Every `*.parquet` under `dir`, with the `key=value` components of its path.
fn hive_files(dir: &Path, found: &mut Vec<(PathBuf, BTreeMap<String, String>)>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() && depth < 8 {
            hive_files(&p, found, depth + 1);
        } else if name.ends_with(".parquet") {
            let keys = p
                .ancestors()
                .skip(1)
                .take(depth)
                .filter_map(|a| {
                    let n = a.file_name()?.to_string_lossy().into_owned();
                    let (k, v) = n.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect();
            found.push((p, keys));
        }
    }
}

fn hive(dir: &Path) -> Result<Vec<Loaded>, AnalysisError> {
    let mut files = Vec::new();
    hive_files(dir, &mut files, 0);
    // (host, run id) → (tables, the footer run metadata of its latest part)
    type Acc = (BTreeMap<String, Vec<RecordBatch>>, (u32, serde_json::Value));
    let mut runs: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for (path, keys) in files {
        let corrupt = |reason: String| AnalysisError::Corrupt {
            path: path.clone(),
            reason,
        };
        let (Some(table), Some(host)) = (keys.get("table"), keys.get("host")) else {
            continue;
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (run, seq) = match stem.rsplit_once('-') {
            Some((run, seq)) => (run.to_owned(), seq.parse::<u32>().unwrap_or(0)),
            None => (stem.clone(), 0),
        };
        let file = File::open(&path).map_err(|e| corrupt(e.to_string()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| corrupt(format!("not a readable Parquet file ({e})")))?;
        let meta: Option<serde_json::Value> = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().rev().find(|k| k.key == "scalp.run"))
            .and_then(|k| k.value.as_deref())
            .and_then(|v| serde_json::from_str(v).ok());
        let batches = builder
            .build()
            .map_err(|e| corrupt(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(format!("unreadable data ({e})")))?;
        let acc = runs
            .entry((host.clone(), run))
            .or_insert_with(|| (BTreeMap::new(), (0, serde_json::Value::Null)));
        acc.0.entry(table.clone()).or_default().extend(batches);
        let Some(meta) = meta else {
            return Err(corrupt(
                "no scalp.run metadata: not a scalp-bpf file".to_owned(),
            ));
        };
        // The latest period's footer is the most complete (the last has run_end).
        let ended = |m: &serde_json::Value| m.get("run_end").is_some_and(|e| !e.is_null());
        if acc.1.1.is_null() || seq > acc.1.0 || (ended(&meta) && !ended(&acc.1.1)) {
            acc.1 = (seq, meta);
        }
    }
    Ok(runs
        .into_iter()
        .map(|((host, run), (tables, (_, meta)))| Loaded {
            member: Member {
                label: run,
                host,
                meta,
            },
            tables,
            unsealed: 0,
        })
        .collect())
}

/// A batch with the run's host and id as two more columns.
fn tag(batch: &RecordBatch, host: &str, run: &str) -> Result<RecordBatch, String> {
    let n = batch.num_rows();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(HOST_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(RUN_COLUMN, DataType::Utf8, false));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![host; n])));
    columns.push(Arc::new(StringArray::from(vec![run; n])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

fn combine(dir: &Path, runs: Vec<Loaded>) -> Result<Run, AnalysisError> {
    let version = |m: &serde_json::Value| m.get("schema_version").and_then(|v| v.as_u64());
    let first = runs.first().and_then(|r| version(&r.member.meta));
    if let Some(other) = runs.iter().find(|r| version(&r.member.meta) != first) {
        return Err(AnalysisError::Corrupt {
            path: dir.to_owned(),
            reason: format!(
                "its runs have different schema versions ({} has {:?}, {} has {:?})",
                runs[0].member.label,
                first,
                other.member.label,
                version(&other.member.meta)
            ),
        });
    }
    let mut tables: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    let mut drops = Vec::new();
    let mut members = Vec::new();
    let mut unsealed = 0;
    for r in runs {
        for (t, batches) in r.tables {
            let out = tables.entry(t).or_default();
            for b in batches {
                out.push(tag(&b, &r.member.host, &r.member.label).map_err(|reason| {
                    AnalysisError::Corrupt {
                        path: PathBuf::from(&r.member.label),
                        reason,
                    }
                })?);
            }
        }
        if let Some(d) = r.member.meta.get("drops").and_then(|d| d.as_array()) {
            drops.extend(d.iter().cloned());
        }
        unsealed += r.unsealed;
        members.push(r.member);
    }
    let hosts: std::collections::BTreeSet<&str> = members.iter().map(|m| m.host.as_str()).collect();
    let meta = json!({
        "tool": "scalp-bpf",
        "schema_version": first,
        "hosts": hosts,
        "runs": members.iter().map(|m| m.label.clone()).collect::<Vec<_>>(),
        "drops": drops,
    });
    Ok(Run {
        dir: dir.to_owned(),
        meta,
        tables,
        unsealed,
        members,
    })
}
