//! What to trace: `--pid` specs (PIDs or names), resolved against /proc.

pub mod matcher;
pub mod procfs;
pub mod traced;

use std::{fmt, str::FromStr};

/// One `--pid` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Pid(u32),
    Name(String),
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty target: give a PID or a process name".to_owned());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(0) | Err(_) => Err(format!("{s} is not a valid PID")),
                Ok(pid) => Ok(TargetSpec::Pid(pid)),
            };
        }
        if s.contains('\0') {
            return Err("a process name cannot contain NUL".to_owned());
        }
        Ok(TargetSpec::Name(s.to_owned()))
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Pid(pid) => write!(f, "{pid}"),
            TargetSpec::Name(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process matches {name:?}{}", close_matches(suggestions))]
    NoMatch {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("no process with PID {pid}")]
    NoPid { pid: u32 },
    #[error("PID {pid} exited before tracing began")]
    Exited { pid: u32 },
}

fn close_matches(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        " (use --wait to wait for it to start)".to_owned()
    } else {
        format!(
            "; close matches: {} (or use --wait)",
            suggestions.join(", ")
        )
    }
}

/// Why a process is traced (the `processes.process_traced_reason` column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TracedReason {
    /// It matched a `--pid` spec.
    Target(String),
    /// Descendant of a target that existed when tracing began.
    Descendant,
    /// Forked by a traced process while tracing.
    Fork,
    /// The command given after `--`.
    Command,
}

impl fmt::Display for TracedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TracedReason::Target(spec) => write!(f, "target:{spec}"),
            TracedReason::Descendant => f.write_str("descendant"),
            TracedReason::Fork => f.write_str("fork"),
            TracedReason::Command => f.write_str("command"),
        }
    }
}

/// The processes the specs name now, each with why, descendants included, never this process.
/// A name that matches nothing is an error unless `wait`; a PID that does not exist always is.
pub fn resolve(
    specs: &[TargetSpec],
    procs: &[procfs::ProcInfo],
    wait: bool,
) -> Result<Vec<(procfs::ProcInfo, TracedReason)>, TargetError> {
    let me = std::process::id();
    let mut chosen: Vec<(procfs::ProcInfo, TracedReason)> = Vec::new();
    let add = |p: &procfs::ProcInfo, reason: TracedReason, chosen: &mut Vec<_>| {
        if p.pid != me
            && !chosen
                .iter()
                .any(|(c, _): &(procfs::ProcInfo, _)| c.pid == p.pid)
        {
            chosen.push((p.clone(), reason));
        }
    };
    for spec in specs {
        let roots: Vec<&procfs::ProcInfo> = match spec {
            TargetSpec::Pid(pid) => {
                let p = procs
                    .iter()
                    .find(|p| p.pid == *pid)
                    .ok_or(TargetError::NoPid { pid: *pid })?;
                if p.dead {
                    return Err(TargetError::Exited { pid: *pid });
                }
                vec![p]
            }
            TargetSpec::Name(name) => {
                let found: Vec<_> = procs
                    .iter()
                    .filter(|p| p.pid != me && !p.dead && matcher::matches(name, p))
                    .collect();
                if found.is_empty() && !wait {
                    return Err(TargetError::NoMatch {
                        name: name.clone(),
                        suggestions: matcher::close_matches(name, procs),
                    });
                }
                found
            }
        };
        for root in roots {
            add(root, TracedReason::Target(spec.to_string()), &mut chosen);
            for pid in procfs::descendants(root.pid, procs) {
                if let Some(p) = procs.iter().find(|p| p.pid == pid && !p.dead) {
                    add(p, TracedReason::Descendant, &mut chosen);
                }
            }
        }
    }
    Ok(chosen)
}

/// Every process in /proc that could be read.
pub fn snapshot() -> Vec<procfs::ProcInfo> {
    procfs::all_pids()
        .into_iter()
        .filter_map(|pid| procfs::read(pid).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_pids_anything_else_a_name() {
        assert_eq!("1234".parse(), Ok(TargetSpec::Pid(1234)));
        assert_eq!("nova-api".parse(), Ok(TargetSpec::Name("nova-api".into())));
        assert_eq!(
            "python3.11".parse(),
            Ok(TargetSpec::Name("python3.11".into()))
        );
        assert!("0".parse::<TargetSpec>().is_err());
        assert!("99999999999".parse::<TargetSpec>().is_err());
        assert!("".parse::<TargetSpec>().is_err());
    }

    #[test]
    fn no_match_lists_close_matches_on_one_line() {
        let err = TargetError::NoMatch {
            name: "nova-apl".into(),
            suggestions: vec!["nova-api".into()],
        };
        assert_eq!(
            err.to_string(),
            "no process matches \"nova-apl\"; close matches: nova-api (or use --wait)"
        );
    }
}
