//! The machine line under top's header: the last interval of the `system` tables (CPU by mode,
//! load, memory, disk and network throughput), the dstat view beside the services'.

use arrow_array::{Array, BooleanArray, Float64Array, RecordBatch};

use crate::{analysis::load::ints, analysis::load::strings, tracers::system};

/// The machine in the last interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machine {
    /// Shares of all CPU time: user (nice included), system (irq and softirq included), iowait,
    /// steal.
    pub user: f64,
    pub system: f64,
    pub iowait: f64,
    pub steal: f64,
    pub load_1m: Option<f64>,
    pub mem_used: Option<i64>,
    pub mem_total: Option<i64>,
    /// Bytes per second over whole disks (a partition's bytes are its disk's too).
    pub disk_read: f64,
    pub disk_write: f64,
    /// Bytes per second over every interface but `lo`.
    pub net_rx: f64,
    pub net_tx: f64,
}

fn sum(batch: &RecordBatch, name: &str, keep: &dyn Fn(usize) -> bool) -> i64 {
    ints(batch, name).map_or(0, |v| {
        v.iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, x)| x.unwrap_or(0))
            .sum()
    })
}

/// Whether `table` is one of the system tables.
pub fn is_system_table(table: &str) -> bool {
    [
        system::TABLE,
        system::CPU_TABLE,
        system::DISK_TABLE,
        system::NET_TABLE,
    ]
    .contains(&table)
}

impl Machine {
    /// Folds one of the system tables' batches in (`secs`: the interval's length). Returns
    /// false for other tables.
    pub fn ingest(&mut self, table: &str, batch: &RecordBatch, secs: f64) -> bool {
        let all = |_: usize| true;
        match table {
            system::TABLE => {
                let modes = [
                    "cpu_user_ns",
                    "cpu_nice_ns",
                    "cpu_system_ns",
                    "cpu_irq_ns",
                    "cpu_softirq_ns",
                    "cpu_iowait_ns",
                    "cpu_steal_ns",
                    "cpu_idle_ns",
                ]
                .map(|m| sum(batch, m, &all) as f64);
                let total: f64 = modes.iter().sum();
                if total > 0.0 {
                    self.user = (modes[0] + modes[1]) / total;
                    self.system = (modes[2] + modes[3] + modes[4]) / total;
                    self.iowait = modes[5] / total;
                    self.steal = modes[6] / total;
                }
                self.load_1m = batch
                    .column_by_name("load_1m")
                    .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
                    .and_then(|a| (!a.is_empty() && !a.is_null(0)).then(|| a.value(0)));
                let first =
                    |name: &str| ints(batch, name).and_then(|v| v.first().copied().flatten());
                self.mem_used = first("mem_used_bytes");
                self.mem_total = first("mem_total_bytes");
            }
            system::DISK_TABLE => {
                let partition = batch
                    .column_by_name("partition")
                    .and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned());
                let whole = |i: usize| partition.as_ref().is_none_or(|p| !p.value(i));
                self.disk_read = sum(batch, "read_bytes", &whole) as f64 / secs;
                self.disk_write = sum(batch, "write_bytes", &whole) as f64 / secs;
            }
            system::NET_TABLE => {
                let names = strings(batch, "interface").unwrap_or_default();
                let not_lo = |i: usize| names.get(i).is_none_or(|n| n != "lo");
                self.net_rx = sum(batch, "rx_bytes", &not_lo) as f64 / secs;
                self.net_tx = sum(batch, "tx_bytes", &not_lo) as f64 / secs;
            }
            system::CPU_TABLE => {}
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols).unwrap()
    }

    #[test]
    fn shares_rates_and_what_is_left_out() {
        let mut m = Machine::default();
        let ns = |v: i64| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
        let sys = batch(vec![
            ("cpu_user_ns", ns(30)),
            ("cpu_nice_ns", ns(10)),
            ("cpu_system_ns", ns(10)),
            ("cpu_irq_ns", ns(5)),
            ("cpu_softirq_ns", ns(5)),
            ("cpu_iowait_ns", ns(20)),
            ("cpu_steal_ns", ns(0)),
            ("cpu_idle_ns", ns(20)),
            (
                "load_1m",
                Arc::new(Float64Array::from(vec![1.5])) as ArrayRef,
            ),
            ("mem_used_bytes", ns(3 << 30)),
            ("mem_total_bytes", ns(8 << 30)),
        ]);
        assert!(m.ingest(system::TABLE, &sys, 2.0));
        assert_eq!((m.user, m.system, m.iowait, m.steal), (0.4, 0.2, 0.2, 0.0));
        assert_eq!(
            (m.load_1m, m.mem_used, m.mem_total),
            (Some(1.5), Some(3 << 30), Some(8 << 30))
        );
        let disk = batch(vec![
            (
                "partition",
                Arc::new(BooleanArray::from(vec![false, true])) as ArrayRef,
            ),
            (
                "read_bytes",
                Arc::new(Int64Array::from(vec![4096, 4096])) as ArrayRef,
            ),
            (
                "write_bytes",
                Arc::new(Int64Array::from(vec![8192, 8192])) as ArrayRef,
            ),
        ]);
        assert!(m.ingest(system::DISK_TABLE, &disk, 2.0));
        assert_eq!((m.disk_read, m.disk_write), (2048.0, 4096.0));
        let net = batch(vec![
            (
                "interface",
                Arc::new(StringArray::from(vec!["lo", "eth0"])) as ArrayRef,
            ),
            (
                "rx_bytes",
                Arc::new(Int64Array::from(vec![1000, 300])) as ArrayRef,
            ),
            (
                "tx_bytes",
                Arc::new(Int64Array::from(vec![1000, 100])) as ArrayRef,
            ),
        ]);
        assert!(m.ingest(system::NET_TABLE, &net, 2.0));
        assert_eq!((m.net_rx, m.net_tx), (150.0, 50.0));
        assert!(!m.ingest("syscalls", &net, 2.0));
    }
}
