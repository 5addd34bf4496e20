//! `scalp-bpf summary RUN_DIR`: per service (or process) and table, the top rows with counts,
//! totals and latency percentiles (p50/p97/p99 from the histograms).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::{
    analysis::{
        TableSpec,
        aggregate::{Agg, Groups, aggregate},
        load::Run,
    },
    exit::ExitCode,
    report::{self, Format, TextTable},
};

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// A directory written by `scalp-bpf run`.
    pub run: PathBuf,
    /// One group per process instead of per service (a target with its workers and children).
    #[arg(long)]
    pub per_process: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Rows per group and table.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Order rows by this column (a counter such as calls, errors, duration_ns_sum, or p50, p97,
    /// p99) [default: the table's main count]
    #[arg(long, value_name = "COLUMN")]
    pub sort: Option<String>,
}

/// The (key, sums) rows of one group.
type GroupRows<'a> = Vec<(&'a Vec<String>, &'a Agg)>;

/// Quantiles reported.
const QUANTILES: [(&str, f64); 3] = [("p50", 0.50), ("p97", 0.97), ("p99", 0.99)];

pub fn main(args: SummaryArgs) -> ExitCode {
    match summary(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("scalp-bpf: {e}");
            e.exit_code()
        }
    }
}

/// The value a row is sorted by.
fn sort_value(spec: &TableSpec, agg: &Agg, column: &str) -> f64 {
    if let Some(i) = spec.counters.iter().position(|c| *c == column) {
        return agg.counters[i] as f64;
    }
    QUANTILES
        .iter()
        .find(|(n, _)| *n == column)
        .and_then(|(_, q)| agg.quantile(*q))
        .unwrap_or(0.0)
}

fn is_duration(column: &str) -> bool {
    column.ends_with("_ns_sum")
}

pub fn summary(args: &SummaryArgs) -> Result<String, crate::analysis::AnalysisError> {
    let run = Run::load(&args.run)?;
    let groups = Groups::of(&run, args.per_process);
    let mut text = String::new();
    let mut json_tables = Vec::new();
    if args.format != Format::Json {
        let seconds = run.seconds().map_or("?".to_owned(), |s| format!("{s:.1}s"));
        text.push_str(&format!(
            "run {} — {} traced, {} processes\n",
            args.run.display(),
            seconds,
            run.tables
                .get("processes")
                .map_or(0, |b| b.iter().map(|b| b.num_rows()).sum::<usize>())
        ));
        if !run.members.is_empty() {
            let hosts: std::collections::BTreeSet<&str> =
                run.members.iter().map(|m| m.host.as_str()).collect();
            text.push_str(&format!(
                "{} runs of {} hosts ({}), grouped per host\n",
                run.members.len(),
                hosts.len(),
                hosts.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if run.unsealed > 0 {
            text.push_str(&format!(
                "{} intervals read from the write-ahead log (the run is live or was killed; `scalp-bpf recover` seals them)\n",
                run.unsealed
            ));
        }
        if let Some(drops) = run
            .meta
            .get("drops")
            .and_then(|d| d.as_array())
            .filter(|d| !d.is_empty())
        {
            text.push_str(&format!(
                "DROPPED: {}\n",
                serde_json::Value::Array(drops.clone())
            ));
        }
    }
    let machine = crate::tracers::system::summary::Machine::of(&run);
    if let (Some(m), false) = (&machine, args.format == Format::Json) {
        text.push_str(&m.line());
        text.push('\n');
    }
    for spec in crate::tracers::views::table_specs() {
        if !run.tables.contains_key(spec.table) {
            continue;
        }
        if let Some(s) = &args.sort
            && !spec.counters.contains(&s.as_str())
            && !QUANTILES.iter().any(|(n, _)| n == s)
        {
            return Err(crate::analysis::AnalysisError::Usage {
                what: format!(
                    "--sort {s}: {} has no such column (counters: {}, p50, p97, p99)",
                    spec.table,
                    spec.counters.join(", ")
                ),
            });
        }
        let sort = args.sort.as_deref().unwrap_or(spec.default_sort);
        let agg = aggregate(&run, spec, &groups, args.per_process)?;
        // Groups by their total of the default sort column, largest first.
        let mut by_group: Vec<(String, GroupRows)> = Vec::new();
        for ((group, key), a) in &agg.rows {
            match by_group.last_mut() {
                Some((g, rows)) if g == group => rows.push((key, a)),
                _ => by_group.push((group.clone(), vec![(key, a)])),
            }
        }
        let main = spec
            .counters
            .iter()
            .position(|c| *c == spec.default_sort)
            .unwrap_or(0);
        by_group.sort_by_key(|(g, rows)| {
            (
                std::cmp::Reverse(rows.iter().map(|(_, a)| a.counters[main]).sum::<i64>()),
                g.clone(),
            )
        });
        let mut json_groups = Vec::new();
        for (group, mut rows) in by_group {
            rows.sort_by(|a, b| {
                sort_value(spec, b.1, sort)
                    .total_cmp(&sort_value(spec, a.1, sort))
                    .then_with(|| a.0.cmp(b.0))
            });
            let total = rows.len();
            rows.truncate(args.top);
            let mut headers: Vec<&str> = spec.keys.to_vec();
            headers.extend(spec.counters);
            let mut numeric = vec![false; spec.keys.len()];
            numeric.extend(vec![true; spec.counters.len()]);
            if spec.histogram.is_some() {
                headers.extend(QUANTILES.iter().map(|(n, _)| *n));
                numeric.extend([true; 3]);
            }
            let mut table = TextTable::new(&headers, &numeric);
            let mut json_rows = Vec::new();
            for (key, a) in &rows {
                let mut cells: Vec<String> = key.to_vec();
                let mut obj = serde_json::Map::new();
                for (k, v) in spec.keys.iter().zip(key.iter()) {
                    obj.insert((*k).to_owned(), json!(v));
                }
                for (c, v) in spec.counters.iter().zip(&a.counters) {
                    cells.push(if is_duration(c) {
                        report::duration(*v as f64)
                    } else {
                        report::count(*v)
                    });
                    obj.insert((*c).to_owned(), json!(v));
                }
                if spec.histogram.is_some() {
                    for (n, q) in QUANTILES {
                        let v = a.quantile(q);
                        cells.push(v.map_or("-".to_owned(), report::duration));
                        obj.insert(format!("{n}_ns"), json!(v));
                    }
                }
                table.rows.push(cells);
                json_rows.push(serde_json::Value::Object(obj));
            }
            let more = if total > rows.len() {
                format!(" (top {} of {total})", rows.len())
            } else {
                String::new()
            };
            match args.format {
                Format::Markdown => text.push_str(&format!(
                    "\n#### {} — {group}{more}\n\n{}",
                    spec.title,
                    table.render(args.format)
                )),
                Format::Table => text.push_str(&format!(
                    "\n{} — {group}{more}\n{}",
                    spec.title,
                    table.render(args.format)
                )),
                Format::Json => {}
            }
            json_groups.push(json!({"group": group, "rows": json_rows, "total_rows": total}));
        }
        json_tables.push(json!({"table": spec.table, "groups": json_groups}));
    }
    if args.format == Format::Json {
        let doc = json!({
            "run": args.run.display().to_string(),
            "seconds": run.seconds(),
            "units": run.units(),
            "drops": run.meta.get("drops"),
            "unsealed_intervals": run.unsealed,
            "hosts": run.meta.get("hosts"),
            "system": machine.as_ref().map(|m| m.json()),
            "tables": json_tables,
        });
        text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
    }
    Ok(text)
}
