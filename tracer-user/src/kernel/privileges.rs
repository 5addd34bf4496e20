//! Are we allowed to load tracing programs?

/// Capability numbers (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Neither root nor the capabilities.
    #[error("must run as root or with CAP_BPF and CAP_PERFMON; missing: {missing}")]
    Missing { missing: String },
}

/// The effective capability set of this process.
fn effective_capabilities() -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .map_or(0, |s| s.capeff)
}

/// Checks for CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN, which implies both).
pub fn check() -> Result<(), PrivilegeError> {
    missing(effective_capabilities())
}

fn missing(caps: u64) -> Result<(), PrivilegeError> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing {
            missing: missing.join(" and "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_admin_or_both_capabilities_are_enough() {
        assert!(missing(1 << CAP_SYS_ADMIN).is_ok());
        assert!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
    }

    #[test]
    fn names_what_is_missing() {
        let err = missing(1 << CAP_BPF).unwrap_err().to_string();
        assert!(err.ends_with("missing: CAP_PERFMON"), "{err}");
        let err = missing(0).unwrap_err().to_string();
        assert!(err.ends_with("missing: CAP_BPF and CAP_PERFMON"), "{err}");
    }
}
