//! `scalp-bpf diff BASE HEAD` (or `diff BASE1 BASE2 … -- HEAD`): the CI regression gate. Compares
//! runs of the same job per request of each service (or per unit of work, or per second), flags
//! what got worse beyond the noise, the thresholds and the floors, and exits 1 when anything
//! did.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::{
    analysis::{
        AnalysisError,
        compare::{self, Comparison, Limits, Measure, Per, Settings},
        diff_report::{self, Report},
        load::Run,
    },
    exit::ExitCode,
    report::{self, Format},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PerArg {
    /// Per group: its own server-side requests when every run has some, else units of work
    /// when every run records them, else seconds.
    Auto,
    /// Per unit of work (`run --units N` or `scalp-bpf units RUN N [--group G]`).
    Unit,
    /// Per second of tracing.
    Second,
    /// Whole runs, not normalized.
    Run,
}

#[derive(Debug, Args)]
#[command(after_help = metrics_help())]
pub struct DiffArgs {
    /// `BASE HEAD`, or base runs then `-- HEAD`: `diff BASE1 BASE2 BASE3 -- HEAD`. A directory
    /// of runs stands for the runs in it.
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The run to judge, after `--` when several base runs are given.
    #[arg(last = true, value_name = "HEAD")]
    pub head: Option<PathBuf>,
    /// What counts are divided by before comparing.
    #[arg(long, value_enum, default_value = "auto")]
    pub per: PerArg,
    /// Relative worsening that counts as a regression, for every count metric (latency
    /// metrics keep their own unless set with --threshold-for).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub threshold: Option<f64>,
    /// A threshold for one metric, e.g. `sql.p97=50%`. Repeatable.
    #[arg(long, value_name = "METRIC=PERCENT", value_parser = parse_threshold_for)]
    pub threshold_for: Vec<(String, f64)>,
    /// The absolute change below which a metric never alarms, e.g. `syscalls.calls=500`
    /// (calls, bytes, or ns for latency). Repeatable.
    #[arg(long, value_name = "METRIC=N", value_parser = parse_floor)]
    pub floor: Vec<(String, f64)>,
    /// Confidence of the intervals: a change regresses only when its interval is entirely above
    /// zero.
    #[arg(long, value_name = "PERCENT", default_value = "99%", value_parser = parse_confidence)]
    pub confidence: f64,
    /// A SQL fingerprint no base run has fails when head issues it at least this often per
    /// request (or unit, or second).
    #[arg(long, value_name = "PERCENT", default_value = "1%", value_parser = parse_percent)]
    pub new_floor: f64,
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: Format,
    /// Also list the unchanged keys.
    #[arg(long)]
    pub all: bool,
}

fn metrics_help() -> String {
    let mut s = String::from("Metrics (default threshold, floor):\n");
    for m in crate::tracers::views::metrics() {
        let floor = match m.measure {
            Measure::Quantile { .. } => report::duration(m.floor),
            Measure::Counter(_) | Measure::Ratio { .. } => m.floor.to_string(),
        };
        s.push_str(&format!(
            "  {:<20} {} ({:.0}%, {floor})\n",
            m.id,
            m.title,
            m.threshold * 100.0
        ));
    }
    s.push_str(
        "\nExit codes: 0 no regression, 1 regression, 8 unreadable run, 9 runs not comparable.",
    );
    s
}

/// `10%`, `10` (percent) or `0.1`-style values are not mixed up: a bare number is percent.
fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%');
    let v: f64 = t
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (write 10%)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} must be a percentage ≥ 0"));
    }
    Ok(v / 100.0)
}

fn parse_confidence(s: &str) -> Result<f64, String> {
    let v = parse_percent(s)?;
    if !(0.5..1.0).contains(&v) {
        return Err(format!("{s:?} must be at least 50% and below 100%"));
    }
    Ok(v)
}

fn metric_id(id: &str) -> Result<String, String> {
    if crate::tracers::views::metrics().iter().any(|m| m.id == id) {
        Ok(id.to_owned())
    } else {
        Err(format!(
            "unknown metric {id:?} (one of {})",
            crate::tracers::views::metrics()
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

fn parse_threshold_for(s: &str) -> Result<(String, f64), String> {
    let (id, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write METRIC=PERCENT, e.g. sql.p97=50%"))?;
    Ok((metric_id(id.trim())?, parse_percent(v)?))
}

fn parse_floor(s: &str) -> Result<(String, f64), String> {
    let (id, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write METRIC=N, e.g. syscalls.calls=500"))?;
    let n: f64 = v
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{v:?} is not a number ≥ 0"))?;
    Ok((metric_id(id.trim())?, n))
}

pub fn main(args: DiffArgs) -> ExitCode {
    match diff(&args) {
        Ok((text, regressed)) => {
            print!("{text}");
            if regressed {
                ExitCode::Regression
            } else {
                ExitCode::Ok
            }
        }
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            e.exit_code()
        }
    }
}

fn limits(args: &DiffArgs) -> Vec<Limits> {
    crate::tracers::views::metrics()
        .iter()
        .map(|m| {
            let mut threshold = match (m.measure, args.threshold) {
                (Measure::Counter(_), Some(t)) => t,
                _ => m.threshold,
            };
            if let Some((_, t)) = args.threshold_for.iter().rev().find(|(id, _)| id == m.id) {
                threshold = *t;
            }
            let floor = args
                .floor
                .iter()
                .rev()
                .find(|(id, _)| id == m.id)
                .map_or(m.floor, |(_, f)| *f);
            Limits { threshold, floor }
        })
        .collect()
}

/// The base runs and the head run the arguments name.
fn runs(args: &DiffArgs) -> Result<(Vec<PathBuf>, PathBuf), AnalysisError> {
    let (bases, head) = match (&args.head, args.runs.as_slice()) {
        (Some(head), bases) => (bases.to_vec(), head.clone()),
        (None, [base, head]) => (vec![base.clone()], head.clone()),
        (None, _) => {
            return Err(AnalysisError::Usage {
                what: "give a base run and a head run (diff BASE HEAD), or base runs and the head after -- (diff BASE1 BASE2 -- HEAD)".to_owned(),
            });
        }
    };
    let mut expanded = Vec::new();
    for b in bases {
        expanded.extend(runs_in(&b));
    }
    Ok((expanded, head))
}

/// A run, or the runs in a directory of runs (sorted); a path that is neither stays as it is,
/// for loading to say why.
fn runs_in(path: &Path) -> Vec<PathBuf> {
    if path.join("run.json").exists() {
        return vec![path.to_owned()];
    }
    let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("run.json").is_file())
                .collect()
        })
        .unwrap_or_default();
    inside.sort();
    if inside.is_empty() {
        vec![path.to_owned()]
    } else {
        inside
    }
}

/// The report, and whether anything regressed.
pub fn diff(args: &DiffArgs) -> Result<(String, bool), AnalysisError> {
    let (base_dirs, head_dir) = runs(args)?;
    let bases: Vec<Run> = base_dirs
        .iter()
        .map(|d| Run::load(d))
        .collect::<Result<_, _>>()?;
    let head = Run::load(&head_dir)?;
    for b in &bases {
        compare::comparable(b, &head)?;
    }
    let settings = Settings {
        per: match args.per {
            PerArg::Auto => Per::Auto,
            PerArg::Unit => Per::Unit,
            PerArg::Second => Per::Second,
            PerArg::Run => Per::Run,
        },
        limits: limits(args),
        confidence: args.confidence,
        new_floor: args.new_floor,
    };
    let Comparison {
        mut changes,
        groups,
    } = compare::compare(&bases, &head, &settings)?;
    diff_report::order(&mut changes);
    let regressed = changes.iter().any(|c| c.verdict.fails());
    let report = Report {
        bases: &base_dirs,
        head: &head_dir,
        settings: &settings,
        groups: &groups,
        changes: &changes,
        regressed,
        all: args.all,
    };
    let text = match args.format {
        Format::Json => report.json(),
        f => report.human(f),
    };
    Ok((text, regressed))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn percentages_and_overrides_parse() {
        assert_eq!(parse_percent("10%"), Ok(0.10));
        assert_eq!(parse_percent("25"), Ok(0.25));
        assert!(parse_percent("ten").is_err());
        assert!(parse_percent("-5%").is_err());
        assert_eq!(
            parse_threshold_for("sql.p97=50%"),
            Ok(("sql.p97".to_owned(), 0.5))
        );
        assert!(parse_threshold_for("sql.p98=50%").is_err());
        assert!(parse_threshold_for("sql.p97").is_err());
        assert_eq!(
            parse_floor("syscalls.calls=500"),
            Ok(("syscalls.calls".to_owned(), 500.0))
        );
        assert!(parse_floor("syscalls.calls=lots").is_err());
        assert_eq!(parse_confidence("99%"), Ok(0.99));
        assert!(parse_confidence("100%").is_err());
        assert!(parse_confidence("30%").is_err());
    }

    #[test]
    fn the_defaults_are_what_no_flag_gives() {
        let cli = Cli::try_parse_from(["diff", "a", "b"]).expect("parses");
        let flags = limits(&cli.diff);
        let defaults = Settings::defaults();
        assert_eq!(defaults.per, Per::Auto);
        assert_eq!(defaults.confidence, cli.diff.confidence);
        assert_eq!(defaults.new_floor, cli.diff.new_floor);
        assert_eq!(defaults.limits.len(), flags.len());
        for (d, f) in defaults.limits.iter().zip(&flags) {
            assert_eq!((d.threshold, d.floor), (f.threshold, f.floor));
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        diff: DiffArgs,
    }

    fn parsed(args: &[&str]) -> Result<(Vec<PathBuf>, PathBuf), AnalysisError> {
        let cli = Cli::try_parse_from(std::iter::once("diff").chain(args.iter().copied()))
            .expect("parses");
        runs(&cli.diff)
    }

    #[test]
    fn base_runs_come_before_the_head_or_before_a_double_dash() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(parsed(&["a", "b"]).unwrap(), (vec![p("a")], p("b")));
        assert_eq!(
            parsed(&["a", "b", "c", "--", "h"]).unwrap(),
            (vec![p("a"), p("b"), p("c")], p("h"))
        );
        assert_eq!(parsed(&["a", "--", "h"]).unwrap(), (vec![p("a")], p("h")));
        assert!(matches!(parsed(&["a"]), Err(AnalysisError::Usage { .. })));
        assert!(matches!(
            parsed(&["a", "b", "c"]),
            Err(AnalysisError::Usage { .. })
        ));
    }

    #[test]
    fn a_directory_of_runs_stands_for_its_runs() {
        let dir = std::env::temp_dir().join(format!("scalp-diff-runs-{}", std::process::id()));
        for r in ["r2", "r1"] {
            std::fs::create_dir_all(dir.join(r)).unwrap();
            std::fs::write(dir.join(r).join("run.json"), "{}").unwrap();
        }
        std::fs::create_dir_all(dir.join("not-a-run")).unwrap();
        assert_eq!(runs_in(&dir), vec![dir.join("r1"), dir.join("r2")]);
        assert_eq!(runs_in(&dir.join("r1")), vec![dir.join("r1")]);
        assert_eq!(runs_in(&dir.join("not-a-run")), vec![dir.join("not-a-run")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
