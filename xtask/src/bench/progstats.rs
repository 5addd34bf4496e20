//! What BPF programs cost per run, from the kernel's own statistics (kernel.bpf_stats_enabled):
//! run_time_ns and run_cnt per program, read with bpftool.

use std::{collections::HashMap, process::Command};

use anyhow::{Context as _, Result};

/// (run_time_ns, run_cnt) per program id.
pub type Snapshot = HashMap<u64, (u64, u64)>;

/// Ids of the loaded programs.
pub fn ids() -> Result<Vec<u64>> {
    Ok(snapshot()?.into_keys().collect())
}

pub fn snapshot() -> Result<Snapshot> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("bpftool")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool JSON")?;
    let mut map = HashMap::new();
    for p in v.as_array().into_iter().flatten() {
        let id = p["id"].as_u64().unwrap_or(0);
        let t = p["run_time_ns"].as_u64().unwrap_or(0);
        let c = p["run_cnt"].as_u64().unwrap_or(0);
        map.insert(id, (t, c));
    }
    Ok(map)
}

/// (total run time, total runs) of `ids` between two snapshots.
pub fn delta(before: &Snapshot, after: &Snapshot, ids: &[u64]) -> (u64, u64) {
    ids.iter().fold((0, 0), |(t, c), id| {
        let (t0, c0) = before.get(id).copied().unwrap_or((0, 0));
        let (t1, c1) = after.get(id).copied().unwrap_or((0, 0));
        (t + t1.saturating_sub(t0), c + c1.saturating_sub(c0))
    })
}

/// Turns kernel.bpf_stats_enabled on for its lifetime.
pub struct StatsOn(String);

impl StatsOn {
    pub fn new() -> Result<StatsOn> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path)?.trim().to_owned();
        std::fs::write(path, "1")?;
        Ok(StatsOn(old))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_sums_the_given_programs_only() {
        let before: Snapshot = [(1, (100, 10)), (2, (50, 5)), (3, (7, 1))].into();
        let after: Snapshot = [(1, (160, 16)), (2, (90, 9)), (3, (1000, 100)), (4, (30, 3))].into();
        assert_eq!(delta(&before, &after, &[1, 2]), (100, 10));
        // A program loaded after the first snapshot counts from zero.
        assert_eq!(delta(&before, &after, &[4]), (30, 3));
        // One unloaded before the second (or counters reset) adds nothing, never underflows.
        assert_eq!(delta(&after, &before, &[1, 4]), (0, 0));
        assert_eq!(delta(&before, &after, &[]), (0, 0));
    }
}
