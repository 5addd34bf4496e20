//! `scalp-bpf diff BASE_RUN HEAD_RUN`: the CI regression gate. Compares two runs of the same
//! job per unit of work (or per second), flags what got worse beyond the thresholds, and exits 1
//! when anything did.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::{
    analysis::{
        AnalysisError,
        compare::{self, Change, Limits, Measure, Per, Verdict},
        load::Run,
    },
    exit::ExitCode,
    report::{self, Format, TextTable},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PerArg {
    /// Per unit when both runs record units of work, else per second.
    Auto,
    /// Per unit of work (`run --units N` or `scalp-bpf units RUN N`).
    Unit,
    /// Per second of tracing.
    Second,
    /// Whole runs, not normalized.
    Run,
}

#[derive(Debug, Args)]
#[command(after_help = metrics_help())]
pub struct DiffArgs {
    /// The reference run (e.g. the target branch's).
    pub base: PathBuf,
    /// The run to judge (e.g. the patch's).
    pub head: PathBuf,
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

/// The report, and whether anything regressed.
pub fn diff(args: &DiffArgs) -> Result<(String, bool), AnalysisError> {
    let base = Run::load(&args.base)?;
    let head = Run::load(&args.head)?;
    compare::comparable(&base, &head)?;
    let per = match args.per {
        PerArg::Unit => Per::Unit,
        PerArg::Second => Per::Second,
        PerArg::Run => Per::Run,
        PerArg::Auto if base.units().is_some() && head.units().is_some() => Per::Unit,
        PerArg::Auto => Per::Second,
    };
    let limits = limits(args);
    let mut changes = compare::compare(&base, &head, per, &limits)?;
    changes.sort_by(|a, b| {
        a.verdict
            .cmp(&b.verdict)
            .then_with(|| {
                // Within a verdict: metric order, then the biggest relative change first.
                let at = |c: &Change| {
                    crate::tracers::views::metrics()
                        .iter()
                        .position(|m| m.id == c.metric.id)
                };
                at(a).cmp(&at(b))
            })
            .then_with(|| {
                b.change
                    .unwrap_or(f64::INFINITY)
                    .abs()
                    .total_cmp(&a.change.unwrap_or(f64::INFINITY).abs())
            })
            .then_with(|| (&a.group, &a.key).cmp(&(&b.group, &b.key)))
    });
    let regressed = changes.iter().any(|c| c.verdict.fails());
    let denominators = (
        compare::denominator(&base, per)?,
        compare::denominator(&head, per)?,
    );
    let text = match args.format {
        Format::Json => json_report(args, per, denominators, &limits, &changes, regressed),
        f => human_report(args, per, denominators, &changes, regressed, f),
    };
    Ok((text, regressed))
}

fn key_text(c: &Change) -> String {
    c.key.join(" · ")
}

fn value_text(c: &Change, v: Option<f64>) -> String {
    match (v, c.metric.measure) {
        (None, _) => "—".to_owned(),
        (Some(v), Measure::Quantile { .. }) => report::duration(v),
        (Some(v), Measure::Ratio { .. }) => format!("{v:.2}"),
        (Some(v), Measure::Counter(_)) if v != 0.0 && v.abs() < 10.0 => format!("{v:.3}"),
        (Some(v), Measure::Counter(_)) => report::count(v.round() as i64),
    }
}

fn change_text(c: &Change) -> String {
    match (c.verdict, c.change) {
        (Verdict::New, _) => "new".to_owned(),
        (Verdict::Gone, _) => "gone".to_owned(),
        (_, Some(x)) => format!("{:+.1}%", x * 100.0),
        (_, None) => "new".to_owned(),
    }
}

fn human_report(
    args: &DiffArgs,
    per: Per,
    (bd, hd): (f64, f64),
    changes: &[Change],
    regressed: bool,
    format: Format,
) -> String {
    let mut s = String::new();
    let n = changes.iter().filter(|c| c.verdict.fails()).count();
    let heading = if format == Format::Markdown {
        "### "
    } else {
        ""
    };
    s.push_str(&format!(
        "{heading}scalp-bpf diff: {}\n\n",
        if regressed {
            format!("{n} regression{}", if n == 1 { "" } else { "s" })
        } else {
            "no regression".to_owned()
        }
    ));
    let per_text = match per {
        Per::Unit => format!("per unit of work (base {bd} units, head {hd} units)"),
        Per::Second => format!("per second of tracing (base {bd:.1} s, head {hd:.1} s)"),
        Per::Run => "per run (not normalized)".to_owned(),
    };
    s.push_str(&format!(
        "base {} → head {}, counts {per_text}\n",
        args.base.display(),
        args.head.display()
    ));
    let sections: [(&str, &[Verdict]); 3] = [
        ("Regressions", &[Verdict::Regression, Verdict::New]),
        ("Improvements", &[Verdict::Improvement]),
        ("Only in base", &[Verdict::Gone]),
    ];
    for (title, verdicts) in sections {
        let rows: Vec<&Change> = changes
            .iter()
            .filter(|c| verdicts.contains(&c.verdict))
            .collect();
        if rows.is_empty() {
            continue;
        }
        s.push_str(&format!("\n{heading}{title}\n\n"));
        s.push_str(&table(&rows, format));
    }
    if args.all {
        let rows: Vec<&Change> = changes
            .iter()
            .filter(|c| c.verdict == Verdict::Same)
            .collect();
        if !rows.is_empty() {
            s.push_str(&format!("\n{heading}Unchanged\n\n"));
            s.push_str(&table(&rows, format));
        }
    }
    s
}

fn table(rows: &[&Change], format: Format) -> String {
    let mut t = TextTable::new(
        &["metric", "group", "key", "base", "head", "change"],
        &[false, false, false, true, true, true],
    );
    for c in rows {
        t.rows.push(vec![
            c.metric.id.to_owned(),
            c.group.clone(),
            key_text(c),
            value_text(c, c.base_rate),
            value_text(c, c.head_rate),
            change_text(c),
        ]);
    }
    t.render(format)
}

fn json_report(
    args: &DiffArgs,
    per: Per,
    (bd, hd): (f64, f64),
    limits: &[Limits],
    changes: &[Change],
    regressed: bool,
) -> String {
    let item = |c: &Change| {
        let key: serde_json::Map<String, serde_json::Value> = c
            .metric
            .keys
            .iter()
            .zip(&c.key)
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        json!({
            "metric": c.metric.id,
            "table": c.metric.table,
            "group": c.group,
            "key": key,
            "verdict": c.verdict.name(),
            "base": c.base,
            "head": c.head,
            "base_normalized": c.base_rate,
            "head_normalized": c.head_rate,
            "change": c.change,
        })
    };
    let pick = |v: &[Verdict]| -> Vec<serde_json::Value> {
        changes
            .iter()
            .filter(|c| v.contains(&c.verdict))
            .map(item)
            .collect()
    };
    let doc = json!({
        "base": args.base.display().to_string(),
        "head": args.head.display().to_string(),
        "per": per.name(),
        "base_denominator": bd,
        "head_denominator": hd,
        "regressed": regressed,
        "limits": crate::tracers::views::metrics().iter().zip(limits).map(|(m, l)| json!({
            "metric": m.id, "threshold": l.threshold, "floor": l.floor,
        })).collect::<Vec<_>>(),
        "regressions": pick(&[Verdict::Regression, Verdict::New]),
        "improvements": pick(&[Verdict::Improvement]),
        "gone": pick(&[Verdict::Gone]),
        "unchanged": if args.all { pick(&[Verdict::Same]) } else { Vec::new() },
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
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
    }
}
