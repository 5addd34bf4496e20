//! Shipping sealed parts to object storage (S3 and compatible servers, or `file://`), through the
//! `object_store` crate, in a Hive layout that many hosts' runs share:
//!
//! ```text
//! URL/table=syscalls/date=2026-11-27/host=ctl-1/<run id>-00000003.parquet
//! ```
//!
//! `date` is the UTC day the part's period began, `host` the run's host name, the run id the
//! run's start time and boot id (`20261127T120405.123456Z-<boot id>`), and the number the part's
//! period. The name depends only on the part, so an upload repeated (after a timeout whose
//! request did succeed, or by `scalp-bpf ship` after `run --ship`) can never make a second copy:
//! uploads are conditional creates (`If-None-Match: *`), and an object already there with the
//! same size counts as shipped. Credentials and endpoint come from the usual AWS environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
//! `AWS_ALLOW_HTTP`…). The run directory's `.shipped` lists what reached which URL.

use std::{
    collections::HashSet,
    fs::{self, File},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
    RetryConfig, aws::AmazonS3ConfigKey, local::LocalFileSystem, path::Path as ObjectPath,
};
use parquet::file::reader::{FileReader as _, SerializedFileReader};
use url::Url;

use super::{layout, metadata};

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("cannot use {url}: {reason}")]
    Store { url: String, reason: String },
    #[error("{path}: {reason}")]
    Part { path: PathBuf, reason: String },
    #[error("{key}: {reason}")]
    Upload { key: String, reason: String },
    #[error("cannot start the upload thread: {0}")]
    Thread(std::io::Error),
}

/// Parses `--ship URL` / `ship RUN URL`: `s3://bucket[/prefix]` or `file:///dir`.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    match url.scheme() {
        "s3" | "s3a" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "s3" | "s3a" => Err(format!("{s:?} names no bucket (write s3://BUCKET/PREFIX)")),
        "file" if url.path() != "/" => Ok(url),
        "file" => Err(format!("{s:?} names no directory")),
        other => Err(format!(
            "{other}:// is not supported (use s3://BUCKET/PREFIX or file:///DIR)"
        )),
    }
}

/// A destination: a store and the prefix under it.
pub struct Store {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl Store {
    pub fn open(url: &Url) -> Result<Store, ShipError> {
        let fail = |reason: String| ShipError::Store {
            url: url.to_string(),
            reason,
        };
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| fail("not a local path".to_owned()))?;
                fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
                let local =
                    LocalFileSystem::new_with_prefix(&dir).map_err(|e| fail(e.to_string()))?;
                (Arc::new(local), ObjectPath::default())
            }
            _ => {
                let mut builder = object_store::aws::AmazonS3Builder::new();
                for (k, v) in std::env::vars() {
                    if let (true, Ok(key)) = (
                        k.starts_with("AWS_"),
                        k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>(),
                    ) {
                        builder = builder.with_config(key, v);
                    }
                }
                let retry = RetryConfig {
                    backoff: object_store::BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(2),
                        base: 2.0,
                    },
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(20),
                };
                let s3 = builder
                    .with_url(url.to_string())
                    .with_retry(retry)
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        "5s",
                    )
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "120s")
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                let prefix = ObjectPath::from(url.path().trim_matches('/'));
                (Arc::new(s3), prefix)
            }
        };
        Ok(Store {
            url: url.to_string(),
            store,
            prefix,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn location(&self, key: &str) -> ObjectPath {
        let mut loc = self.prefix.clone();
        for part in key.split('/') {
            loc = loc.child(part);
        }
        loc
    }

    /// Uploads one part under `key` unless an object of the same size is there already.
    /// Returns whether it was uploaded now (false: it was there).
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<bool, ShipError> {
        let loc = self.location(key);
        let size = data.len() as u64;
        let fail = |reason: String| ShipError::Upload {
            key: format!("{}/{key}", self.url.trim_end_matches('/')),
            reason,
        };
        let payload = PutPayload::from(data);
        let create = PutOptions::from(PutMode::Create);
        match self.store.put_opts(&loc, payload.clone(), create).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let there = self
                    .store
                    .head(&loc)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if there.size == size {
                    Ok(false)
                } else {
                    Err(fail(format!(
                        "an object of {} bytes is there already (this part has {size}); not overwritten",
                        there.size
                    )))
                }
            }
            // A store without conditional writes: the name is the part's own, so overwriting
            // it with the same bytes cannot duplicate anything.
            Err(object_store::Error::NotImplemented { .. }) => self
                .store
                .put_opts(&loc, payload, PutOptions::from(PutMode::Overwrite))
                .await
                .map(|_| true)
                .map_err(|e| fail(e.to_string())),
            Err(e) => Err(fail(e.to_string())),
        }
    }
}

/// The object name of a part, from its footer (every part names its table, host, run and
/// period start) and its file name (its period).
pub fn object_key(part: &Path) -> Result<String, ShipError> {
    let fail = |reason: String| ShipError::Part {
        path: part.to_owned(),
        reason,
    };
    let file = File::open(part).map_err(|e| fail(e.to_string()))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| fail(format!("not a readable Parquet file ({e})")))?;
    let kv: Vec<(String, String)> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let get = |k: &str| {
        kv.iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let missing = |k: &str| fail(format!("no {k} in its metadata: not a scalp-bpf part"));
    let table = get("scalp.table").ok_or_else(|| missing("scalp.table"))?;
    let host = get("scalp.host").ok_or_else(|| missing("scalp.host"))?;
    let start = get("scalp.run_start").ok_or_else(|| missing("scalp.run_start"))?;
    let run = match get("scalp.run_id") {
        Some(id) => id.to_owned(),
        None => metadata::run_id(start, get("scalp.boot_id").unwrap_or("")),
    };
    let day = get("scalp.period_start").unwrap_or(start);
    let date = day
        .get(..10)
        .filter(|d| d.len() == 10)
        .ok_or_else(|| missing("scalp.run_start"))?;
    let seq = part
        .file_name()
        .and_then(|n| layout::part_seq(&n.to_string_lossy()))
        .ok_or_else(|| fail("not named part-N.parquet".to_owned()))?;
    Ok(format!(
        "table={}/date={date}/host={}/{}-{seq:08}.parquet",
        clean(table),
        clean(host),
        clean(&run)
    ))
}

/// A path segment safe in a Hive layout (no `/`, `=` or spaces).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The keys `.shipped` records as uploaded to `url`.
fn journal(root: &Path, url: &str) -> HashSet<String> {
    fs::read_to_string(root.join(layout::SHIPPED))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            (f.next()? == url).then(|| f.next().map(str::to_owned))?
        })
        .collect()
}

fn record(root: &Path, url: &str, key: &str) {
    let line = format!("{url}\t{key}\n");
    let r = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(root.join(layout::SHIPPED))
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = r {
        // Only an optimisation: the next `ship` finds the object there and skips it.
        tracing::warn!("cannot record {key} in .shipped: {e}");
    }
}

/// What shipping did.
#[derive(Debug, Default)]
pub struct Report {
    pub url: String,
    /// Uploaded now.
    pub uploaded: usize,
    /// Found there already (uploaded before).
    pub present: usize,
    /// Not uploaded: the part and the last error.
    pub failed: Vec<(PathBuf, String)>,
}

/// Uploads one part; records it in `.shipped`.
async fn ship_one(
    store: &Store,
    root: &Path,
    part: &Path,
    report: &mut Report,
) -> Result<(), String> {
    let key = object_key(part).map_err(|e| e.to_string())?;
    let data = fs::read(part).map_err(|e| format!("{}: {e}", part.display()))?;
    let uploaded = store.put(&key, data).await.map_err(|e| e.to_string())?;
    record(root, store.url(), &key);
    if uploaded {
        report.uploaded += 1;
    } else {
        report.present += 1;
    }
    Ok(())
}

/// Every sealed part of a run, table by table.
pub fn run_parts(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    dirs.sort();
    for d in dirs {
        out.extend(layout::parts(&d));
    }
    out
}

/// `scalp-bpf ship RUN URL`: uploads every part of a run not recorded as shipped to URL.
pub fn ship_run(root: &Path, url: &Url) -> Result<Report, ShipError> {
    let store = Store::open(url)?;
    let done = journal(root, store.url());
    let runtime = runtime()?;
    let mut report = Report {
        url: store.url().to_owned(),
        ..Report::default()
    };
    for part in run_parts(root) {
        if let Ok(key) = object_key(&part)
            && done.contains(&key)
        {
            report.present += 1;
            continue;
        }
        if let Err(e) = runtime.block_on(ship_one(&store, root, &part, &mut report)) {
            report.failed.push((part, e));
        }
    }
    Ok(report)
}

fn runtime() -> Result<tokio::runtime::Runtime, ShipError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ShipError::Thread)
}

enum Msg {
    Part(PathBuf),
    Finish(Duration),
}

/// Retries after a failure start at this and double, up to the maximum.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// `run --ship`: uploads parts as they are sealed, on a thread of its own (the interval loop
/// never waits for the network). A failed upload is retried later, in order; parts stay on the
/// local disk in any case.
pub struct Shipper {
    tx: mpsc::Sender<Msg>,
    handle: Option<JoinHandle<Report>>,
}

impl Shipper {
    pub fn start(root: &Path, url: &Url) -> Result<Shipper, ShipError> {
        let store = Store::open(url)?;
        let rt = runtime()?;
        let (tx, rx) = mpsc::channel();
        let root = root.to_owned();
        let handle = std::thread::Builder::new()
            .name("scalp-ship".to_owned())
            .spawn(move || ship_loop(&store, &rt, &root, &rx))
            .map_err(ShipError::Thread)?;
        Ok(Shipper {
            tx,
            handle: Some(handle),
        })
    }

    pub fn submit(&self, part: PathBuf) {
        let _ = self.tx.send(Msg::Part(part));
    }

    /// Uploads what is left, trying for at most `wait`; returns what happened.
    pub fn finish(mut self, wait: Duration) -> Report {
        let _ = self.tx.send(Msg::Finish(wait));
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

fn ship_loop(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    root: &Path,
    rx: &mpsc::Receiver<Msg>,
) -> Report {
    let mut report = Report {
        url: store.url().to_owned(),
        ..Report::default()
    };
    let mut pending: Vec<PathBuf> = Vec::new();
    let mut last_error = String::new();
    let mut backoff = FIRST_RETRY;
    let mut retry_at: Option<Instant> = None;
    // Tries the pending parts in order; stops at the first failure (the store is likely down).
    let attempt = |pending: &mut Vec<PathBuf>, report: &mut Report, last_error: &mut String| {
        while let Some(part) = pending.first() {
            match rt.block_on(ship_one(store, root, part, report)) {
                Ok(()) => {
                    pending.remove(0);
                }
                Err(e) => {
                    tracing::warn!("upload failed, will retry: {e}");
                    *last_error = e;
                    return false;
                }
            }
        }
        true
    };
    loop {
        let msg = match retry_at {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Msg::Finish(Duration::ZERO)),
            },
            None => Some(rx.recv().unwrap_or(Msg::Finish(Duration::ZERO))),
        };
        let wait = match msg {
            Some(Msg::Part(p)) => {
                pending.push(p);
                None
            }
            Some(Msg::Finish(wait)) => Some(wait),
            None => None,
        };
        if let Some(wait) = wait {
            let deadline = Instant::now() + wait;
            let mut delay = FIRST_RETRY;
            while !attempt(&mut pending, &mut report, &mut last_error) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(delay.min(left));
                delay = (delay * 2).min(MAX_RETRY);
            }
            report.failed = pending
                .into_iter()
                .map(|p| (p, last_error.clone()))
                .collect();
            return report;
        }
        if attempt(&mut pending, &mut report, &mut last_error) {
            backoff = FIRST_RETRY;
            retry_at = None;
        } else {
            retry_at = Some(Instant::now() + backoff);
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_s3_or_file() {
        assert!(parse_url("s3://bucket/prefix").is_ok());
        assert!(parse_url("file:///tmp/fleet").is_ok());
        assert!(
            parse_url("s3:///nobucket")
                .unwrap_err()
                .contains("no bucket")
        );
        assert!(
            parse_url("http://x/y")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(parse_url("fleet").unwrap_err().contains("not a URL"));
    }

    #[test]
    fn hive_segments_are_clean() {
        assert_eq!(clean("ctl-1.example"), "ctl-1.example");
        assert_eq!(clean("a/b=c d"), "a_b_c_d");
    }
}
