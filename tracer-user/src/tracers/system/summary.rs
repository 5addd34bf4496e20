//! `summary`'s line about the machine: CPU busy (and its user, system, iowait parts) over the
//! run, the busiest disk's and interface's throughput.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use serde_json::{Value, json};

use super::tables::{DISK, NET, SYSTEM};
use crate::analysis::load::{Run, ints, strings};

/// Sums of the machine's figures over a run's intervals.
#[derive(Debug, Default, PartialEq)]
pub struct Machine {
    pub cpus: i64,
    /// ns of CPU time: busy (not idle or iowait), user (with nice), system (with irq and
    /// softirq), iowait, and all modes.
    pub busy: i64,
    pub user: i64,
    pub system: i64,
    pub iowait: i64,
    pub all: i64,
    /// Seconds of intervals.
    pub seconds: f64,
    /// The whole disk (not a partition) with the most bytes: name, read, written.
    pub disk: Option<(String, i64, i64)>,
    /// The interface with the most bytes: name, received, sent.
    pub net: Option<(String, i64, i64)>,
}

fn column_sum(batches: &[RecordBatch], name: &str) -> i64 {
    batches
        .iter()
        .filter_map(|b| ints(b, name))
        .flatten()
        .flatten()
        .sum()
}

/// Per name, the sums of two columns, for rows `keep` accepts.
fn per_name(
    batches: &[RecordBatch],
    key: &str,
    a: &str,
    b: &str,
    keep: impl Fn(&RecordBatch, usize) -> bool,
) -> Option<(String, i64, i64)> {
    let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for batch in batches {
        let (Some(names), Some(x), Some(y)) = (strings(batch, key), ints(batch, a), ints(batch, b))
        else {
            continue;
        };
        for (i, name) in names.into_iter().enumerate() {
            if keep(batch, i) {
                let e = sums.entry(name).or_default();
                e.0 += x[i].unwrap_or(0);
                e.1 += y[i].unwrap_or(0);
            }
        }
    }
    sums.into_iter()
        .max_by_key(|(n, (x, y))| (x + y, std::cmp::Reverse(n.clone())))
        .map(|(n, (x, y))| (n, x, y))
}

impl Machine {
    /// The run's figures; `None` when it has no `system` rows.
    pub fn of(run: &Run) -> Option<Machine> {
        let system = run.tables.get(SYSTEM)?;
        let mode = |m: &str| column_sum(system, &format!("cpu_{m}_ns"));
        let all: i64 = [
            "user", "nice", "system", "irq", "softirq", "iowait", "steal", "idle",
        ]
        .iter()
        .map(|m| mode(m))
        .sum();
        if all <= 0 {
            return None;
        }
        let starts = column_sum(system, "interval_start");
        let ends = column_sum(system, "interval_end");
        let cpus = system
            .iter()
            .filter_map(|b| ints(b, "cpus"))
            .flatten()
            .flatten()
            .max()
            .unwrap_or(0);
        let empty = Vec::new();
        let partition = |b: &RecordBatch, i: usize| {
            b.column_by_name("partition")
                .and_then(|c| {
                    c.as_any()
                        .downcast_ref::<arrow_array::BooleanArray>()
                        .map(|a| a.value(i))
                })
                .unwrap_or(false)
        };
        Some(Machine {
            cpus,
            busy: all - mode("idle") - mode("iowait"),
            user: mode("user") + mode("nice"),
            system: mode("system") + mode("irq") + mode("softirq"),
            iowait: mode("iowait"),
            all,
            seconds: (ends - starts) as f64 / 1e6,
            disk: per_name(
                run.tables.get(DISK).unwrap_or(&empty),
                "device",
                "read_bytes",
                "write_bytes",
                |b, i| !partition(b, i),
            ),
            net: per_name(
                run.tables.get(NET).unwrap_or(&empty),
                "interface",
                "rx_bytes",
                "tx_bytes",
                |_, _| true,
            ),
        })
    }

    fn percent(&self, ns: i64) -> f64 {
        100.0 * ns as f64 / self.all as f64
    }

    fn mib_per_s(&self, bytes: i64) -> f64 {
        if self.seconds > 0.0 {
            bytes as f64 / f64::from(1 << 20) / self.seconds
        } else {
            0.0
        }
    }

    /// `system: CPU 62 % busy (user 48 %, system 12 %, iowait 1 %) of 2 CPUs; disk …; net …`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "system: CPU {:.0} % busy (user {:.0} %, system {:.0} %, iowait {:.0} %) of {} CPUs",
            self.percent(self.busy),
            self.percent(self.user),
            self.percent(self.system),
            self.percent(self.iowait),
            self.cpus
        );
        if let Some((name, read, written)) = &self.disk {
            line += &format!(
                "; disk {name} {:.1} MiB/s read, {:.1} MiB/s written",
                self.mib_per_s(*read),
                self.mib_per_s(*written)
            );
        }
        if let Some((name, rx, tx)) = &self.net {
            line += &format!(
                "; net {name} {:.1} MiB/s in, {:.1} MiB/s out",
                self.mib_per_s(*rx),
                self.mib_per_s(*tx)
            );
        }
        line
    }

    pub fn json(&self) -> Value {
        json!({
            "cpus": self.cpus,
            "cpu_busy_percent": self.percent(self.busy),
            "cpu_user_percent": self.percent(self.user),
            "cpu_system_percent": self.percent(self.system),
            "cpu_iowait_percent": self.percent(self.iowait),
            "disk": self.disk.as_ref().map(|(n, r, w)| json!({
                "device": n, "read_bytes_per_s": self.mib_per_s(*r) * f64::from(1 << 20),
                "write_bytes_per_s": self.mib_per_s(*w) * f64::from(1 << 20)})),
            "net": self.net.as_ref().map(|(n, r, t)| json!({
                "interface": n, "rx_bytes_per_s": self.mib_per_s(*r) * f64::from(1 << 20),
                "tx_bytes_per_s": self.mib_per_s(*t) * f64::from(1 << 20)})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_gives_shares_of_all_cpu_time_and_rates() {
        let m = Machine {
            cpus: 2,
            busy: 1_240,
            user: 960,
            system: 240,
            iowait: 20,
            all: 2_000,
            seconds: 10.0,
            disk: Some(("vda".into(), 1 << 20, 14 << 20)),
            net: Some(("eth0".into(), 0, 0)),
        };
        assert_eq!(
            m.line(),
            "system: CPU 62 % busy (user 48 %, system 12 %, iowait 1 %) of 2 CPUs; disk vda 0.1 MiB/s read, 1.4 MiB/s written; net eth0 0.0 MiB/s in, 0.0 MiB/s out"
        );
    }
}
