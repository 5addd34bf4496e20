//! `--max-size`: how much a run may write. Sizes are parsed and shown in binary units, and the
//! check runs after every interval, projecting the next interval's growth from the largest seen
//! so far, so that the directory stays under the limit instead of going one interval past it.

use std::fmt;

const UNITS: [(&str, u32); 5] = [("", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)];

/// A number of bytes, shown in the largest binary unit that keeps it short (`1 GiB`, `500 MiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, shift) = UNITS
            .iter()
            .rev()
            .find(|(_, shift)| self.0 >= 1u64 << shift)
            .copied()
            .unwrap_or(UNITS[0]);
        if shift == 0 {
            return write!(f, "{} B", self.0);
        }
        let value = self.0 as f64 / (1u64 << shift) as f64;
        if self.0.is_multiple_of(1u64 << shift) {
            write!(f, "{value} {unit}iB")
        } else {
            write!(f, "{value:.1} {unit}iB")
        }
    }
}

/// Parses a human size: a number (decimals allowed) and an optional unit K, M, G or T — powers of
/// 1024, with or without a trailing `B`/`iB`, any case (`500M`, `2G`, `1.5GiB`, `64kb`, `4096`).
/// `0` means no limit (`None`).
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    const HINT: &str = "write sizes like 500M, 2G or 0 for no limit";
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, shift)| *shift)
        .ok_or_else(|| format!("{s:?} is not a size ({HINT})"))?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size ({HINT})"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(match bytes.round() as u64 {
        0 => None,
        n => Some(n),
    })
}

/// The limit and what the run has written so far.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    last_used: u64,
    /// The largest growth of one interval seen so far.
    peak_growth: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            last_used: 0,
            peak_growth: 0,
        }
    }

    pub fn limit(&self) -> Size {
        Size(self.limit)
    }

    /// After an interval was written (`used` bytes in the directory now): whether the next one
    /// could take the directory past the limit, counting `reserve` bytes that stopping itself
    /// still writes (last footers, the processes table, run.json).
    pub fn exhausted(&mut self, used: u64, reserve: u64) -> bool {
        let growth = used.saturating_sub(self.last_used);
        self.last_used = used;
        self.peak_growth = self.peak_growth.max(growth);
        used.saturating_add(self.peak_growth)
            .saturating_add(reserve)
            > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human_and_binary() {
        assert_eq!(parse_size("500M"), Ok(Some(500 << 20)));
        assert_eq!(parse_size("2G"), Ok(Some(2 << 30)));
        assert_eq!(parse_size("2g"), Ok(Some(2 << 30)));
        assert_eq!(parse_size("1GiB"), Ok(Some(1 << 30)));
        assert_eq!(parse_size("1GB"), Ok(Some(1 << 30)));
        assert_eq!(parse_size("64kb"), Ok(Some(64 << 10)));
        assert_eq!(parse_size(" 1.5G "), Ok(Some(3 << 29)));
        assert_eq!(parse_size("1 T"), Ok(Some(1 << 40)));
        assert_eq!(parse_size("4096"), Ok(Some(4096)));
        assert_eq!(parse_size("4096B"), Ok(Some(4096)));
    }

    #[test]
    fn zero_means_unlimited() {
        assert_eq!(parse_size("0"), Ok(None));
        assert_eq!(parse_size("0G"), Ok(None));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in [
            "",
            "G",
            "-1G",
            "1X",
            "1.2.3M",
            "big",
            "1e3",
            "1 GB extra",
            "99999999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_show_in_the_largest_whole_unit() {
        assert_eq!(Size(1 << 30).to_string(), "1 GiB");
        assert_eq!(Size(500 << 20).to_string(), "500 MiB");
        assert_eq!(Size(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Size(1023).to_string(), "1023 B");
        assert_eq!(Size(0).to_string(), "0 B");
    }

    #[test]
    fn budget_stops_before_the_next_interval_could_cross_the_limit() {
        let mut b = Budget::new(1000);
        // 100 bytes per interval, 50 reserved for the way out: 800 + 100 + 50 fits, 900 does not.
        for used in (100..=800).step_by(100) {
            assert!(!b.exhausted(used, 50), "{used}");
        }
        assert!(b.exhausted(900, 50));
    }

    #[test]
    fn a_burst_makes_the_projection_more_careful() {
        let mut b = Budget::new(1000);
        assert!(!b.exhausted(100, 0));
        assert!(!b.exhausted(400, 0)); // grew by 300: 400 + 300 fits
        assert!(!b.exhausted(450, 0)); // quieter, but 450 + 300 still fits
        assert!(b.exhausted(750, 0)); // 750 + 300 would not
    }

    #[test]
    fn an_output_already_past_the_limit_is_exhausted() {
        let mut b = Budget::new(100);
        assert!(b.exhausted(500, 0));
        assert!(Budget::new(100).exhausted(90, 20));
    }
}
