//! `diff`'s report: Markdown for a review comment, an aligned table for a terminal, JSON for
//! machines. Each finding says what it is per unit of its group (per request where the group
//! serves requests), how sure the change is ("+14.0% ± 9.0%"), and where: the routes whose cost
//! per request grew with it and, for SQL, the call sites.

use std::path::PathBuf;

use serde_json::json;

use super::{
    compare::{Change, GroupBasis, Measure, Settings, Verdict},
    series::Basis,
    stats,
};
use crate::report::{self, Format, TextTable};

/// Everything a report shows.
pub struct Report<'a> {
    pub bases: &'a [PathBuf],
    pub head: &'a PathBuf,
    pub settings: &'a Settings,
    pub groups: &'a [GroupBasis],
    pub changes: &'a [Change],
    pub regressed: bool,
    /// Also list the unchanged keys.
    pub all: bool,
}

const SECTIONS: [(&str, &str, &[Verdict]); 4] = [
    (
        "Regressions",
        "regressions",
        &[Verdict::Regression, Verdict::New],
    ),
    ("Improvements", "improvements", &[Verdict::Improvement]),
    ("Only in base", "gone", &[Verdict::Gone]),
    (
        "New in head, below the floor for new keys",
        "new_below_floor",
        &[Verdict::NewBelowFloor],
    ),
];

/// What a count is divided by, as a suffix.
fn per_text(basis: Basis) -> &'static str {
    match basis {
        Basis::Request => "/request",
        Basis::Unit => "/unit",
        Basis::Second => "/s",
        Basis::Run => "",
    }
}

fn value_text(c: &Change, v: Option<f64>) -> String {
    match (v, c.metric.measure) {
        (None, _) => "—".to_owned(),
        (Some(v), Measure::Quantile { .. }) => report::duration(v),
        (Some(v), Measure::Ratio { .. }) => format!("{v:.2}"),
        (Some(v), Measure::Counter(_)) if v != 0.0 && v.abs() < 10.0 => {
            format!("{v:.3}{}", per_text(c.basis))
        }
        (Some(v), Measure::Counter(_)) => {
            format!("{}{}", report::count(v.round() as i64), per_text(c.basis))
        }
    }
}

/// "+14.0% ± 9.0%": the change and half its interval's width.
pub fn change_text(c: &Change) -> String {
    match (c.verdict, c.change) {
        (Verdict::New | Verdict::NewBelowFloor, _) => "new".to_owned(),
        (Verdict::Gone, _) => "gone".to_owned(),
        (_, Some(x)) => match c.interval {
            Some(i) if i.high.is_finite() => {
                format!("{:+.1}% ± {:.1}%", x * 100.0, (i.high - i.low) * 50.0)
            }
            Some(_) => format!("{:+.1}% ± ∞", x * 100.0),
            None => format!("{:+.1}%", x * 100.0),
        },
        (_, None) if c.excess > 0.0 => "new".to_owned(),
        (_, None) => "—".to_owned(),
    }
}

fn where_text(c: &Change) -> String {
    let mut parts: Vec<String> = c
        .routes
        .iter()
        .map(|r| {
            let v = |x: Option<f64>| x.map_or("—".to_owned(), |x| format!("{x:.2}"));
            format!(
                "{} {}: {} {} → {} per request",
                r.method,
                r.route,
                r.what,
                v(r.base),
                v(r.head)
            )
        })
        .collect();
    parts.extend(c.call_sites.iter().map(|s| {
        let line = s.line.map_or(String::new(), |l| format!(":{l}"));
        format!("at {}{line} in {}", s.file, s.function)
    }));
    parts.join("; ")
}

/// Sorts changes in report order: by verdict, then metric order, then the biggest relative
/// change first.
pub fn order(changes: &mut [Change]) {
    let at = |c: &Change| {
        crate::tracers::views::metrics()
            .iter()
            .position(|m| m.id == c.metric.id)
    };
    changes.sort_by(|a, b| {
        a.verdict
            .cmp(&b.verdict)
            .then_with(|| at(a).cmp(&at(b)))
            .then_with(|| {
                b.change
                    .unwrap_or(f64::INFINITY)
                    .abs()
                    .total_cmp(&a.change.unwrap_or(f64::INFINITY).abs())
            })
            .then_with(|| (&a.group, &a.key).cmp(&(&b.group, &b.key)))
    });
}

impl Report<'_> {
    fn uniform(&self) -> Option<&GroupBasis> {
        let first = self.groups.first()?;
        self.groups
            .iter()
            .all(|g| {
                g.basis == first.basis
                    && g.base_units == first.base_units
                    && g.head_units == first.head_units
            })
            .then_some(first)
    }

    fn per_name(&self) -> &'static str {
        match self.groups.first() {
            None => match self.settings.per {
                super::compare::Per::Auto => "auto",
                super::compare::Per::Unit => "unit",
                super::compare::Per::Second => "second",
                super::compare::Per::Run => "run",
            },
            Some(first) if self.groups.iter().all(|g| g.basis == first.basis) => first.basis.name(),
            Some(_) => "mixed",
        }
    }

    pub fn human(&self, format: Format) -> String {
        let mut s = String::new();
        let n = self.changes.iter().filter(|c| c.verdict.fails()).count();
        let heading = if format == Format::Markdown {
            "### "
        } else {
            ""
        };
        s.push_str(&format!(
            "{heading}scalp-bpf diff: {}\n\n",
            if self.regressed {
                format!("{n} regression{}", if n == 1 { "" } else { "s" })
            } else {
                "no regression".to_owned()
            }
        ));
        let base = match self.bases {
            [one] => one.display().to_string(),
            many => format!("{} base runs ({} …)", many.len(), many[0].display()),
        };
        s.push_str(&format!("base {base} → head {}\n", self.head.display()));
        let per: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let amount = |v: f64| match g.basis {
                    Basis::Request => format!("{} requests", report::count(v.round() as i64)),
                    Basis::Unit => format!("{v} units"),
                    Basis::Second => format!("{v:.1} s"),
                    Basis::Run => "whole run".to_owned(),
                };
                format!(
                    "{} per {} (base {}, head {})",
                    g.group,
                    g.basis.name(),
                    amount(g.base_units),
                    amount(g.head_units)
                )
            })
            .collect();
        if !per.is_empty() {
            s.push_str(&format!("counts per group: {}\n", per.join("; ")));
        }
        s.push_str(&format!(
            "intervals at {:.0}% confidence from each run's per-interval samples ({} resamples)",
            self.settings.confidence * 100.0,
            stats::RESAMPLES
        ));
        if self.bases.len() == 1 {
            s.push_str("; one base run: run-to-run noise is not measured (diff BASE1 BASE2 … -- HEAD measures it)");
        } else {
            s.push_str(&format!(
                "; run-to-run noise from {} base runs",
                self.bases.len()
            ));
        }
        s.push('\n');
        for (title, _, verdicts) in SECTIONS {
            self.section(&mut s, heading, title, verdicts, format);
        }
        if self.all {
            self.section(&mut s, heading, "Unchanged", &[Verdict::Same], format);
        }
        s
    }

    fn section(
        &self,
        s: &mut String,
        heading: &str,
        title: &str,
        verdicts: &[Verdict],
        format: Format,
    ) {
        let rows: Vec<&Change> = self
            .changes
            .iter()
            .filter(|c| verdicts.contains(&c.verdict))
            .collect();
        if rows.is_empty() {
            return;
        }
        s.push_str(&format!("\n{heading}{title}\n\n"));
        let mut t = TextTable::new(
            &["metric", "group", "key", "base", "head", "change", "where"],
            &[false, false, false, true, true, true, false],
        );
        for c in rows {
            t.rows.push(vec![
                c.metric.id.to_owned(),
                c.group.clone(),
                c.key.join(" · "),
                value_text(c, c.base_rate),
                value_text(c, c.head_rate),
                change_text(c),
                where_text(c),
            ]);
        }
        s.push_str(&t.render(format));
    }

    pub fn json(&self) -> String {
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
                "per": c.basis.name(),
                "base": c.base,
                "head": c.head,
                "base_normalized": c.base_rate,
                "head_normalized": c.head_rate,
                "change": c.change,
                "change_low": c.interval.map(|i| i.low).filter(|x| x.is_finite()),
                "change_high": c.interval.map(|i| i.high).filter(|x| x.is_finite()),
                "between_runs": c.interval.and_then(|i| i.between_runs),
                "change_text": change_text(c),
                "excess": c.excess,
                "routes": c.routes.iter().map(|r| json!({
                    "method": r.method, "route": r.route, "what": r.what,
                    "base": r.base, "head": r.head, "excess": r.excess,
                })).collect::<Vec<_>>(),
                "call_sites": c.call_sites.iter().map(|s| json!({
                    "function": s.function, "file": s.file, "line": s.line,
                    "base_rate": s.base_rate, "head_rate": s.head_rate,
                })).collect::<Vec<_>>(),
            })
        };
        let pick = |v: &[Verdict]| -> Vec<serde_json::Value> {
            self.changes
                .iter()
                .filter(|c| v.contains(&c.verdict))
                .map(item)
                .collect()
        };
        let uniform = self.uniform();
        let mut doc = json!({
            "base": match self.bases { [one] => json!(one.display().to_string()), _ => json!(null) },
            "bases": self.bases.iter().map(|b| b.display().to_string()).collect::<Vec<_>>(),
            "head": self.head.display().to_string(),
            "per": self.per_name(),
            "base_denominator": uniform.map(|g| g.base_units),
            "head_denominator": uniform.map(|g| g.head_units),
            "groups": self.groups.iter().map(|g| json!({
                "group": g.group, "per": g.basis.name(),
                "base_units": g.base_units, "head_units": g.head_units,
            })).collect::<Vec<_>>(),
            "confidence": self.settings.confidence,
            "resamples": stats::RESAMPLES,
            "new_floor": self.settings.new_floor,
            "regressed": self.regressed,
            "limits": crate::tracers::views::metrics().iter().zip(&self.settings.limits).map(|(m, l)| json!({
                "metric": m.id, "threshold": l.threshold, "floor": l.floor,
            })).collect::<Vec<_>>(),
            "unchanged": if self.all { pick(&[Verdict::Same]) } else { Vec::new() },
        });
        for (_, name, verdicts) in SECTIONS {
            doc[name] = json!(pick(verdicts));
        }
        let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
        s.push('\n');
        s
    }
}
