//! The output directory: checked before anything is loaded, created only once tracing is ready,
//! so a run that fails to start leaves nothing behind.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output {path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("output directory {path} is not empty (choose a new one)")]
    NotEmpty { path: PathBuf },
    #[error("output directory {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create output directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The default output directory name: `scalp-<host>-<UTC timestamp>`.
pub fn default_dir(host: &str, now: SystemTime) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    PathBuf::from(format!("scalp-{host}-{stamp}"))
}

/// Checks that `dir` can become the output: absent (its nearest existing ancestor writable), or
/// an empty writable directory.
pub fn check(dir: &Path) -> Result<(), OutputError> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(OutputError::NotADirectory {
            path: dir.to_owned(),
        }),
        Ok(_) => {
            let mut entries = fs::read_dir(dir).map_err(|source| OutputError::NotWritable {
                path: dir.to_owned(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(OutputError::NotEmpty {
                    path: dir.to_owned(),
                });
            }
            probe_writable(dir)
        }
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            let mut ancestor = dir.parent();
            while let Some(a) = ancestor {
                let a = if a.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    a
                };
                match fs::metadata(a) {
                    Ok(m) if m.is_dir() => return probe_writable(a),
                    Ok(_) => {
                        return Err(OutputError::NotADirectory { path: a.to_owned() });
                    }
                    Err(_) => ancestor = a.parent(),
                }
            }
            Ok(())
        }
        Err(source) => Err(OutputError::NotWritable {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Root passes permission checks, so try for real: create and remove a file.
fn probe_writable(dir: &Path) -> Result<(), OutputError> {
    let probe = dir.join(format!(".scalp-bpf-probe-{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|source| OutputError::NotWritable {
            path: dir.to_owned(),
            source,
        })
}

/// Creates the output directory (0700, parents as needed).
pub fn create(dir: &Path) -> Result<(), OutputError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| OutputError::Create {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_has_host_and_compact_utc_time() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_300_633);
        assert_eq!(
            default_dir("vm", t),
            PathBuf::from("scalp-vm-20261121T223713Z")
        );
    }

    #[test]
    fn rejects_files_and_non_empty_directories() {
        let tmp = std::env::temp_dir().join(format!("scalp-output-test-{}", std::process::id()));
        fs::create_dir_all(&tmp).unwrap();
        assert!(check(&tmp).is_ok());
        assert!(check(&tmp.join("new/deeper")).is_ok());
        fs::write(tmp.join("f"), b"x").unwrap();
        assert!(matches!(check(&tmp), Err(OutputError::NotEmpty { .. })));
        assert!(matches!(
            check(&tmp.join("f")),
            Err(OutputError::NotADirectory { .. })
        ));
        assert!(matches!(
            check(&tmp.join("f/sub")),
            Err(OutputError::NotADirectory { .. })
        ));
        fs::remove_dir_all(&tmp).unwrap();
    }
}
