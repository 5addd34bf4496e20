//! The sink's two helper threads, so that the interval loop never waits for the disk beyond
//! its own append: the syncer (fdatasync of the log, at most once per `--sync-every`) and the
//! sealer (a closed period's log into Parquet parts).

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use super::{
    error::SinkError,
    seal::{self, SealOptions, Sealed},
};

/// fdatasync requests, coalesced: a burst of requests for one log costs one call.
pub struct Syncer {
    tx: Option<mpsc::Sender<(PathBuf, File)>>,
    handle: Option<JoinHandle<()>>,
    error: Arc<Mutex<Option<(PathBuf, io::Error)>>>,
    calls: Arc<AtomicU64>,
}

impl Syncer {
    pub fn start() -> io::Result<Syncer> {
        let (tx, rx) = mpsc::channel::<(PathBuf, File)>();
        let error = Arc::new(Mutex::new(None));
        let calls = Arc::new(AtomicU64::new(0));
        let (e, c) = (error.clone(), calls.clone());
        let handle = std::thread::Builder::new()
            .name("scalp-sync".to_owned())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    jobs.extend(rx.try_iter());
                    // The latest descriptor of each log is enough.
                    let mut seen: Vec<PathBuf> = Vec::new();
                    for (path, file) in jobs.into_iter().rev() {
                        if seen.contains(&path) {
                            continue;
                        }
                        c.fetch_add(1, Ordering::Relaxed);
                        if let Err(err) = file.sync_data()
                            && let Ok(mut slot) = e.lock()
                        {
                            slot.get_or_insert((path.clone(), err));
                        }
                        seen.push(path);
                    }
                }
            })?;
        Ok(Syncer {
            tx: Some(tx),
            handle: Some(handle),
            error,
            calls,
        })
    }

    /// Asks for `file` (a duplicate descriptor of the log at `path`) to be synced.
    pub fn request(&self, path: &Path, file: File) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((path.to_owned(), file));
        }
    }

    /// The first sync that failed since the last call.
    pub fn take_error(&self) -> Option<(PathBuf, io::Error)> {
        self.error.lock().ok()?.take()
    }

    /// fdatasync calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Finishes the requests made, then stops.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A closed log to seal.
struct Job {
    seq: u32,
    path: PathBuf,
}

/// Seals closed logs in order, one at a time; results are picked up by [`Sealer::results`].
pub struct Sealer {
    tx: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<(u32, Result<Sealed, SinkError>)>,
    handle: Option<JoinHandle<()>>,
    /// Logs handed over and not sealed yet: (period, bytes).
    waiting: Vec<(u32, u64)>,
}

impl Sealer {
    pub fn start(root: &Path) -> io::Result<Sealer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let root = root.to_owned();
        let handle = std::thread::Builder::new()
            .name("scalp-seal".to_owned())
            .spawn(move || {
                let mut failed = false;
                for job in rx {
                    // After a failure the logs stay for `recover`: sealing a later one would
                    // only fail the same way (a full disk) or leave periods out of order.
                    let result = if failed {
                        Err(SinkError::Thread("an earlier seal failed".to_owned()))
                    } else {
                        let opts = SealOptions {
                            extra: &[],
                            schema_parts: false,
                        };
                        seal::seal(&root, job.seq, &job.path, &opts)
                    };
                    failed |= result.is_err();
                    if done_tx.send((job.seq, result)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Sealer {
            tx: Some(tx),
            done,
            handle: Some(handle),
            waiting: Vec::new(),
        })
    }

    /// Hands a closed log over.
    pub fn submit(&mut self, seq: u32, path: PathBuf, bytes: u64) -> Result<(), SinkError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| SinkError::Thread("the sealer was stopped".to_owned()))?;
        tx.send(Job { seq, path })
            .map_err(|_| SinkError::Thread("the sealer thread ended".to_owned()))?;
        self.waiting.push((seq, bytes));
        Ok(())
    }

    /// Bytes of the logs handed over and not sealed yet.
    pub fn waiting_bytes(&self) -> u64 {
        self.waiting.iter().map(|(_, b)| b).sum()
    }

    /// Seals finished since the last call.
    pub fn results(&mut self) -> Vec<(u32, Result<Sealed, SinkError>)> {
        let out: Vec<_> = self.done.try_iter().collect();
        self.forget(&out);
        out
    }

    fn forget(&mut self, results: &[(u32, Result<Sealed, SinkError>)]) {
        self.waiting
            .retain(|(seq, _)| !results.iter().any(|(s, _)| s == seq));
    }

    /// Waits for every log handed over to be sealed (or to fail); returns their results.
    pub fn stop(&mut self) -> Vec<(u32, Result<Sealed, SinkError>)> {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let out: Vec<_> = self.done.try_iter().collect();
        self.forget(&out);
        out
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
