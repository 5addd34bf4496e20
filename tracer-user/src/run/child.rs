//! `scalp-bpf run -- CMD`: start CMD held at a gate, mark it traced, then let it exec, so that
//! tracing covers it from its first syscall.
//!
//! std's `Command` cannot do this: `spawn` waits for the exec to happen, which a gate in
//! `pre_exec` would prevent. So this forks by hand; between fork and exec the child only calls
//! async-signal-safe functions on memory prepared before the fork.

use std::{
    ffi::{CString, OsString},
    io,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::PathBuf,
};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("command not executable: {path}: {reason}")]
    NotExecutable { path: PathBuf, reason: String },
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CommandError {
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            CommandError::NotFound(_) => crate::exit::ExitCode::CommandNotFound,
            CommandError::NotExecutable { .. } => crate::exit::ExitCode::CommandNotExecutable,
            CommandError::Spawn { .. } => crate::exit::ExitCode::CommandNotExecutable,
        }
    }
}

/// A command checked and ready to start.
pub struct Prepared {
    path: PathBuf,
    path_c: CString,
    argv: Vec<CString>,
    /// SIGINT and SIGTERM, where scalp-bpf started with them ignored (a background job of a
    /// shell): the command gets them ignored too, as it would untraced, although scalp-bpf
    /// handles them by the time it forks (exec resets handled signals to their default).
    ignored: Vec<libc::c_int>,
}

/// Whether `sig` is ignored in this process (asked before any handler is installed).
fn ignored_now(sig: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Finds `program` like execvp does: as given when it has a '/', else in $PATH.
fn find(program: &OsString) -> Result<PathBuf, CommandError> {
    let display = program.to_string_lossy().into_owned();
    let candidates: Vec<PathBuf> = if program.as_bytes().contains(&b'/') {
        vec![PathBuf::from(program)]
    } else {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .collect()
    };
    let mut not_executable = None;
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Ok(candidate);
            }
            Ok(meta) => {
                let reason = if meta.is_dir() {
                    "is a directory"
                } else {
                    "permission denied"
                };
                not_executable.get_or_insert((candidate, reason.to_owned()));
            }
            Err(_) => {}
        }
    }
    match not_executable {
        Some((path, reason)) => Err(CommandError::NotExecutable { path, reason }),
        None => Err(CommandError::NotFound(display)),
    }
}

impl Prepared {
    pub fn new(argv: &[OsString]) -> Result<Prepared, CommandError> {
        let program = argv
            .first()
            .ok_or_else(|| CommandError::NotFound(String::new()))?;
        let path = find(program)?;
        let nul = |s: &[u8]| {
            CString::new(s).map_err(|_| CommandError::NotExecutable {
                path: path.clone(),
                reason: "argument contains a NUL byte".to_owned(),
            })
        };
        let path_c = nul(path.as_os_str().as_bytes())?;
        let argv = argv
            .iter()
            .map(|a| nul(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let ignored = [libc::SIGINT, libc::SIGTERM]
            .into_iter()
            .filter(|&sig| ignored_now(sig))
            .collect();
        Ok(Prepared {
            path,
            path_c,
            argv,
            ignored,
        })
    }

    /// Forks the child, calls `mark(pid)` while it waits at the gate, then lets it exec.
    pub fn spawn(&self, mark: impl FnOnce(u32)) -> Result<u32, CommandError> {
        let spawn_err = |source| CommandError::Spawn {
            path: self.path.clone(),
            source,
        };
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: a zeroed sigaction is a valid value; it is filled in before the fork.
        let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
        ignore.sa_sigaction = libc::SIG_IGN;
        let gate = pipe().map_err(spawn_err)?;
        let report = pipe().map_err(spawn_err)?;
        // SAFETY: fork in a process with other threads: the child below only calls
        // async-signal-safe functions (read, write, close, sigaction, prctl, execv, _exit) on memory prepared before
        // the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(spawn_err(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: see above; every pointer is valid in the child's copy of our memory.
            unsafe {
                libc::close(gate[1]);
                libc::close(report[0]);
                let mut byte = 0u8;
                while libc::read(gate[0], (&raw mut byte).cast(), 1) < 0
                    && *libc::__errno_location() == libc::EINTR
                {}
                libc::close(gate[0]);
                // What scalp-bpf started with ignored stays ignored (sigaction is
                // async-signal-safe).
                for &sig in &self.ignored {
                    libc::sigaction(sig, &ignore, std::ptr::null_mut());
                }
                // The command gets none of the ambient capabilities (CAP_BPF, CAP_PERFMON) a
                // non-root operator gave scalp-bpf. prctl is a raw syscall: async-signal-safe.
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                );
                libc::execv(self.path_c.as_ptr(), argv.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(report[1], (&raw const errno).cast(), 4);
                libc::_exit(127);
            }
        }
        let pid = pid as u32;
        // SAFETY: closing our copies of the child's ends.
        unsafe {
            libc::close(gate[0]);
            libc::close(report[1]);
        }
        mark(pid);
        // SAFETY: writing one byte to and closing our end of the gate; reading from the report
        // pipe, which closes (CLOEXEC) when exec succeeds or carries errno when it fails.
        let errno = unsafe {
            libc::write(gate[1], [1u8].as_ptr().cast(), 1);
            libc::close(gate[1]);
            let mut errno = 0i32;
            let n = loop {
                let n = libc::read(report[0], (&raw mut errno).cast(), 4);
                if n >= 0 || *libc::__errno_location() != libc::EINTR {
                    break n;
                }
            };
            libc::close(report[0]);
            (n == 4).then_some(errno)
        };
        if let Some(errno) = errno {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid as i32, &mut status, 0) };
            let source = io::Error::from_raw_os_error(errno);
            return Err(match errno {
                libc::ENOENT => CommandError::NotFound(self.path.display().to_string()),
                _ => CommandError::NotExecutable {
                    path: self.path.clone(),
                    reason: source.to_string(),
                },
            });
        }
        Ok(pid)
    }
}

fn pipe() -> io::Result<[i32; 2]> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fds)
}

/// Passes a signal scalp-bpf received on to the command (not reaped yet: its waiter has not
/// returned).
pub fn pass_signal(pid: u32, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits (blocking) for `pid` and returns its wait status.
#[cfg(test)]
pub fn wait(pid: u32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if r >= 0 {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The wait status of our child `pid` if it has exited, without blocking.
pub fn try_wait(pid: u32) -> io::Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: a non-blocking wait for our own child.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r > 0 {
            return Ok(Some(status));
        }
        if r == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The shell-style exit code of a wait status: the code, or 128 + the signal.
pub fn exit_code_of(status: i32) -> u8 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else if libc::WIFSIGNALED(status) {
        (128 + libc::WTERMSIG(status)) as u8
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_in_path_and_rejects_what_cannot_run() {
        assert!(find(&"sh".into()).is_ok());
        assert!(matches!(
            find(&"no-such-program-xyz".into()),
            Err(CommandError::NotFound(_))
        ));
        assert!(matches!(
            find(&"/etc".into()),
            Err(CommandError::NotExecutable { .. })
        ));
        let plain = std::env::temp_dir().join(format!("scalp-plain-{}", std::process::id()));
        std::fs::write(&plain, b"data").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let found = find(&plain.clone().into_os_string());
        std::fs::remove_file(&plain).unwrap();
        assert!(
            matches!(found, Err(CommandError::NotExecutable { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn spawns_waits_and_reports_the_exit_code() {
        let cmd = Prepared::new(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        let mut marked = None;
        let pid = cmd.spawn(|p| marked = Some(p)).unwrap();
        assert_eq!(marked, Some(pid));
        assert_eq!(exit_code_of(wait(pid).unwrap()), 7);
    }
}
