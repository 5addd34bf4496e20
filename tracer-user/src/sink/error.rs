//! What can go wrong while writing a run, named by its cause (a full file system, a removed
//! directory), and a file wrapper that keeps the OS error the Parquet writer only reports as text.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
};

use arrow_schema::ArrowError;
use parquet::errors::ParquetError;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("no space left on the output's file system (writing {path})")]
    DiskFull { path: PathBuf },
    #[error("the output directory {dir} was removed")]
    Removed { dir: PathBuf },
    #[error("the write-ahead log {path} was deleted under the run")]
    LogDeleted { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("cannot encode rows for {path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: ArrowError,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    Ship(#[from] super::ship::ShipError),
    #[error("the sink's background thread stopped: {0}")]
    Thread(String),
}

impl SinkError {
    /// Names the failure by its cause: a full file system, a removed directory, or the error.
    pub fn io(root: &Path, path: &Path, source: io::Error) -> SinkError {
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            return SinkError::DiskFull {
                path: path.to_owned(),
            };
        }
        if !root.is_dir() {
            return SinkError::Removed {
                dir: root.to_owned(),
            };
        }
        SinkError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The Parquet writer reports I/O errors as text: the OS error its file saw says more.
    pub fn parquet(root: &Path, path: &Path, source: ParquetError, errno: &AtomicI32) -> SinkError {
        match errno.load(Ordering::Relaxed) {
            0 => SinkError::Parquet {
                path: path.to_owned(),
                source,
            },
            e => SinkError::io(root, path, io::Error::from_raw_os_error(e)),
        }
    }

    /// The Arrow IPC writer wraps I/O errors; unwrap them to name the cause.
    pub fn arrow(root: &Path, path: &Path, source: ArrowError) -> SinkError {
        match source {
            ArrowError::IoError(_, e) => SinkError::io(root, path, e),
            source => SinkError::Arrow {
                path: path.to_owned(),
                source,
            },
        }
    }

    /// What the failure means for the run, to follow its message.
    pub fn consequence(&self) -> &'static str {
        match self {
            SinkError::Removed { .. } => "",
            _ => ", the intervals written before stay readable",
        }
    }
}

/// A file being written: keeps the first OS error of a write, counts bytes.
pub struct CountedFile {
    pub file: File,
    pub written: u64,
    pub errno: Arc<AtomicI32>,
}

impl CountedFile {
    pub fn new(file: File) -> CountedFile {
        CountedFile {
            file,
            written: 0,
            errno: Arc::new(AtomicI32::new(0)),
        }
    }

    fn note<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            let _ = self.errno.compare_exchange(
                0,
                e.raw_os_error().unwrap_or(libc::EIO),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        result
    }
}

impl Write for CountedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.file.write(buf);
        let n = self.note(result)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.file.flush();
        self.note(result)
    }
}

/// fsync of a directory: a rename or a new file in it survives a power loss only once the
/// directory is on disk too.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
