//! The checks the guest runs, and the shell plan (`/vm/plan.sh`) the guest init sources. The
//! workloads' parameters also go to `plan.json` on the host, where tests/vm/vm_checks.py reads
//! the numbers it expects.

use anyhow::{Result, bail};

/// One `scalp-bpf run` of one workload in the guest.
pub struct Check {
    pub name: &'static str,
    /// A function of the guest init run in the background during the check, with the check's
    /// name (a helper the workload waits for; it ends when the check does).
    before: Option<&'static str>,
    /// The block device whose /sys/block stat is kept around the run.
    disk: Option<&'static str>,
    /// `xtask vm-workload` arguments.
    workload: &'static [&'static str],
}

/// The core subset. The numbers are tests/vm/vm_checks.py's expectations too (it reads them
/// from plan.json): change them here only.
pub const CHECKS: &[Check] = &[
    Check {
        name: "syscalls",
        before: None,
        disk: None,
        workload: &["syscalls", "--count", "1000", "--exit", "42"],
    },
    Check {
        name: "fileio",
        before: None,
        disk: None,
        workload: &[
            "fileio",
            "--path",
            "/mnt/fileio.dat",
            "--writes",
            "64",
            "--size",
            "16384",
            "--fsync-every",
            "16",
        ],
    },
    Check {
        name: "blockio",
        before: None,
        disk: Some("vdb"),
        workload: &[
            "direct", "--device", "/dev/vdb", "--writes", "256", "--reads", "128",
        ],
    },
    Check {
        name: "http",
        before: None,
        disk: None,
        workload: &["http", "--requests", "200", "--port", "8080"],
    },
    Check {
        name: "writeback",
        before: Some("writeback_sync"),
        disk: Some("vda"),
        workload: &[
            "buffered",
            "--path",
            "/mnt/writeback.dat",
            "--bytes",
            "2097152",
            "--written",
            "/tmp/written",
            "--synced",
            "/tmp/synced",
        ],
    },
];

/// The checks named (all when none), in CHECKS' order.
pub fn select(names: &[String]) -> Result<Vec<&'static Check>> {
    for n in names {
        if !CHECKS.iter().any(|c| c.name == n) {
            let known: Vec<_> = CHECKS.iter().map(|c| c.name).collect();
            bail!("--check {n}: unknown ({})", known.join(", "));
        }
    }
    Ok(CHECKS
        .iter()
        .filter(|c| names.is_empty() || names.iter().any(|n| n == c.name))
        .collect())
}

/// Extra scalp-bpf arguments (and ftrace events) travel as one word list: none may hold white
/// space. `option` names them in the error.
pub fn check_args(option: &str, args: &[String]) -> Result<()> {
    if let Some(a) = args
        .iter()
        .find(|a| a.is_empty() || a.contains(char::is_whitespace))
    {
        bail!("{option} {a:?}: one word per {option}, without white space");
    }
    Ok(())
}

pub struct Plan<'a> {
    pub checks: &'a [&'static Check],
    pub scalp_args: &'a [String],
    pub verbose: u8,
    pub scalp_log: Option<&'a str>,
    pub memlock: Option<&'a str>,
    /// ftrace events (`block:block_rq_issue`, …) the guest records around every check.
    pub ftrace: &'a [String],
}

/// Single-quotes a word for the guest's shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Seconds one `scalp-bpf run` may take in the guest before it counts as a hang (killed: exit
/// 137). A check takes 5–20 s under TCG; all of them at this limit still fit in --vm-timeout's
/// default, so a hang costs one check, not the kernel's other results.
const CHECK_TIMEOUT_S: u32 = 120;

impl Plan<'_> {
    pub fn script(&self) -> String {
        let mut s = String::from("# Written by xtask/src/vm/plan.rs; sourced by /init.\n");
        s += &format!("CHECK_TIMEOUT={CHECK_TIMEOUT_S}\n");
        let global = if self.verbose > 0 {
            format!("-{}", "v".repeat(usize::from(self.verbose)))
        } else {
            String::new()
        };
        s += &format!("SCALP_GLOBAL={}\n", quote(&global));
        // Word-split by the guest shell on purpose (`check` expands it unquoted): `select_args`
        // refuses arguments with white space.
        s += &format!("SCALP_ARGS={}\n", quote(&self.scalp_args.join(" ")));
        if let Some(log) = self.scalp_log {
            s += &format!("export SCALP_LOG={}\n", quote(log));
        }
        if let Some(m) = self.memlock {
            s += &format!("ulimit -l {} || fail 'ulimit -l {m} refused'\n", quote(m));
        }
        if !self.ftrace.is_empty() {
            s += &format!("FTRACE={}\nftrace_on\n", quote(&self.ftrace.join(" ")));
        }
        // What `scalp-bpf check` says, before the runs (tests/vm/vm_checks.py's test_support).
        s += "support\n";
        for c in self.checks {
            if let Some(b) = c.before {
                s += &format!("{b} {} &\n", c.name);
            }
            s += &format!("check {}", c.name);
            if let Some(d) = c.disk {
                s += &format!(" --disk {d}");
            }
            s += " -- /vm/xtask vm-workload";
            for w in c.workload {
                s += &format!(" {}", quote(w));
            }
            s += "\nwait\n";
        }
        s
    }

    /// The checks and their workloads, for plan.json.
    pub fn json(&self) -> serde_json::Value {
        self.checks
            .iter()
            .map(|c| {
                (
                    c.name.to_owned(),
                    serde_json::json!({ "disk": c.disk, "workload": c.workload }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_runs_each_selected_check_once_with_the_extra_arguments() {
        let checks = select(&["blockio".to_owned(), "syscalls".to_owned()]).unwrap();
        let extra = ["--tracers".to_owned(), "syscalls".to_owned()];
        let plan = Plan {
            checks: &checks,
            scalp_args: &extra,
            verbose: 2,
            scalp_log: Some("debug"),
            memlock: None,
            ftrace: &[],
        };
        let s = plan.script();
        assert!(s.contains("SCALP_GLOBAL='-vv'\n"));
        assert!(s.contains("SCALP_ARGS='--tracers syscalls'\n"));
        assert!(s.contains("export SCALP_LOG='debug'\n"));
        assert!(s.find("support\n").unwrap() < s.find("check syscalls").unwrap());
        let syscalls = s
            .find("check syscalls -- /vm/xtask vm-workload 'syscalls'")
            .unwrap();
        let blockio = s.find("check blockio --disk vdb -- ").unwrap();
        assert!(syscalls < blockio, "CHECKS' order");
        assert!(!s.contains("fileio"));
        assert!(!s.contains("ftrace_on"));
        assert!(select(&["nope".to_owned()]).is_err());
        assert!(check_args("--scalp-arg", &extra).is_ok());
        assert!(check_args("--scalp-arg", &["--pid 1".to_owned()]).is_err());
        assert_eq!(select(&[]).unwrap().len(), CHECKS.len());
    }
}
