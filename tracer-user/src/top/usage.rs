//! scalp-bpf's own CPU and memory, for the status line (from /proc/self).

use std::time::Instant;

/// CPU time and RSS of this process, sampled once per interval.
pub struct SelfUsage {
    last: Option<(Instant, u64)>,
    ticks_per_second: u64,
    page_size: u64,
    /// CPU used over the last sample period, % of one core.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
}

impl SelfUsage {
    pub fn new() -> SelfUsage {
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        SelfUsage {
            last: None,
            ticks_per_second: crate::kernel::clock_ticks_per_second().max(1),
            page_size: u64::try_from(page).unwrap_or(4096),
            cpu_percent: None,
            rss_bytes: None,
        }
    }

    pub fn sample(&mut self) {
        let now = Instant::now();
        if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| cpu_ticks(&s))
        {
            if let Some((then, before)) = self.last {
                let secs = now.duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    let used = ticks.saturating_sub(before) as f64 / self.ticks_per_second as f64;
                    self.cpu_percent = Some(100.0 * used / secs);
                }
            }
            self.last = Some((now, ticks));
        }
        self.rss_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|pages| pages * self.page_size);
    }
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat, counted after the comm's closing paren).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_ticks_skip_a_comm_with_spaces() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(super::cpu_ticks(stat), Some(12));
    }
}
