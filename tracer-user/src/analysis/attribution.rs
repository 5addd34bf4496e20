//! What a regression is, where: the routes whose cost per request grew with it (from the
//! server-side `http_requests` rows, which carry each route's SQL statements and syscalls per
//! request) and the call sites of a SQL fingerprint (`sql_statements.code_*`, filled in by the
//! Python attribution where the runs have it).

use std::collections::BTreeMap;

use super::{
    AnalysisError,
    compare::{Change, Context, Limits, Verdict},
    load::{ints, strings},
    series::Frame,
};
use crate::tracers::views::{Measure, Metric};

/// A route whose cost per request grew beyond its noise, in the same group as a regression.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteShare {
    pub method: String,
    pub route: String,
    /// What grew per request: "SQL statements" or "syscalls".
    pub what: &'static str,
    /// Per request of the route, in the base runs and in head.
    pub base: Option<f64>,
    pub head: Option<f64>,
    /// (head − base) × head's requests of the route: the extra statements or syscalls.
    pub excess: f64,
}

/// A place in the code that issued a fingerprint's statements.
#[derive(Clone, Debug, PartialEq)]
pub struct CallSite {
    pub function: String,
    pub file: String,
    pub line: Option<i64>,
    /// Statements per unit of the group from this site in the base runs (pooled) and in head.
    pub base_rate: f64,
    pub head_rate: f64,
}

/// The routes' SQL statements per request (what grows when a fingerprint does).
static ROUTE_SQL: Metric = Metric {
    id: "route.sql_per_request",
    table: "http_requests",
    title: "SQL statements per request of a route",
    keys: &["http_request_method", "http_route"],
    only: &[("direction", &["server"])],
    except: &[],
    measure: Measure::Ratio {
        numerator: "sql_statements",
        denominator: "attributed_calls",
    },
    threshold: 0.0,
    floor: 0.0,
    new_is_regression: false,
    rank: u8::MAX,
};

/// The routes' syscalls per request (what grows with syscall and fsync counts).
static ROUTE_SYSCALLS: Metric = Metric {
    id: "route.syscalls_per_request",
    table: "http_requests",
    title: "Syscalls per request of a route",
    keys: &["http_request_method", "http_route"],
    only: &[("direction", &["server"])],
    except: &[],
    measure: Measure::Ratio {
        numerator: "syscalls",
        denominator: "attributed_calls",
    },
    threshold: 0.0,
    floor: 0.0,
    new_is_regression: false,
    rank: u8::MAX - 1,
};

/// Routes shown per regression.
const MAX_ROUTES: usize = 3;
/// Call sites shown per fingerprint.
const MAX_SITES: usize = 3;

/// Which per-route cost follows a metric, if any.
fn route_metric(metric: &Metric) -> Option<&'static Metric> {
    match metric.id {
        "sql.calls" => Some(&ROUTE_SQL),
        "syscalls.calls" | "syscalls.errors" | "fileio.syncs" => Some(&ROUTE_SYSCALLS),
        _ => None,
    }
}

/// Fills in `routes` and `call_sites` of the failing changes.
pub fn annotate(ctx: &mut Context, changes: &mut [Change]) -> Result<(), AnalysisError> {
    // Only a significant increase counts: the internal metrics' threshold and floor are zero.
    let zero = Limits {
        threshold: 0.0,
        floor: 0.0,
    };
    let mut grown: BTreeMap<&'static str, Vec<Change>> = BTreeMap::new();
    for m in [&ROUTE_SQL, &ROUTE_SYSCALLS] {
        let wanted = changes
            .iter()
            .any(|c| c.verdict.fails() && route_metric(c.metric).is_some_and(|r| r.id == m.id));
        if wanted {
            let rows = ctx.changes(m, &zero)?;
            grown.insert(
                m.id,
                rows.into_iter()
                    .filter(|c| c.verdict == Verdict::Regression)
                    .collect(),
            );
        }
    }
    let sites = call_sites(ctx, changes);
    for c in changes.iter_mut().filter(|c| c.verdict.fails()) {
        if c.metric.table == "http_requests"
            && let (Some(m), Some(r)) = (key_of(c, "http_request_method"), key_of(c, "http_route"))
        {
            c.routes.push(RouteShare {
                method: m.to_owned(),
                route: r.to_owned(),
                what: c.metric.title,
                base: c.base_rate,
                head: c.head_rate,
                excess: c.excess * c.head_units,
            });
        }
        if let Some(rm) = route_metric(c.metric) {
            let mut routes: Vec<RouteShare> = grown
                .get(rm.id)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|r| r.group == c.group)
                .map(|r| RouteShare {
                    method: r.key[0].clone(),
                    route: r.key[1].clone(),
                    what: if rm.id == ROUTE_SQL.id {
                        "SQL statements"
                    } else {
                        "syscalls"
                    },
                    base: r.base_rate,
                    head: r.head_rate,
                    excess: r.excess * r.head_units,
                })
                .filter(|r| r.excess > 0.0)
                .collect();
            routes.sort_by(|a, b| b.excess.total_cmp(&a.excess));
            routes.truncate(MAX_ROUTES);
            c.routes = routes;
        }
        if let Some(s) = sites.get(&(c.group.clone(), c.key.clone())) {
            c.call_sites = s.clone();
        }
    }
    Ok(())
}

fn key_of<'c>(c: &'c Change, column: &str) -> Option<&'c str> {
    c.metric
        .keys
        .iter()
        .position(|k| *k == column)
        .map(|i| c.key[i].as_str())
}

type SiteKey = (String, String, Option<i64>);

/// The call sites of the failing SQL fingerprints, from the `code_*` columns of
/// `sql_statements` (runs without them have none: an empty list).
fn call_sites(ctx: &Context, changes: &[Change]) -> BTreeMap<(String, Vec<String>), Vec<CallSite>> {
    let wanted: BTreeMap<(String, Vec<String>), (f64, f64)> = changes
        .iter()
        .filter(|c| {
            c.verdict.fails() && c.metric.table == "sql_statements" && c.metric.keys.len() == 2
        })
        .map(|c| {
            let units = ctx
                .groups()
                .into_iter()
                .find(|g| g.group == c.group)
                .map_or((0.0, 0.0), |g| (g.base_units, g.head_units));
            ((c.group.clone(), c.key.clone()), units)
        })
        .collect();
    let mut out = BTreeMap::new();
    if wanted.is_empty() {
        return out;
    }
    let mut base: BTreeMap<(String, Vec<String>), BTreeMap<SiteKey, i64>> = BTreeMap::new();
    for f in &ctx.bases {
        count_sites(f, &wanted, &mut base);
    }
    let mut head = BTreeMap::new();
    count_sites(&ctx.head, &wanted, &mut head);
    for (k, (base_units, head_units)) in &wanted {
        let Some(h) = head.get(k) else { continue };
        let b = base.get(k);
        let mut sites: Vec<CallSite> = h
            .iter()
            .map(|((function, file, line), calls)| {
                let before = b.and_then(|b| b.get(&(function.clone(), file.clone(), *line)));
                CallSite {
                    function: function.clone(),
                    file: file.clone(),
                    line: *line,
                    base_rate: before
                        .map_or(0.0, |n| *n as f64 / base_units.max(f64::MIN_POSITIVE)),
                    head_rate: *calls as f64 / head_units.max(f64::MIN_POSITIVE),
                }
            })
            .collect();
        sites.sort_by(|a, b| {
            (b.head_rate - b.base_rate)
                .total_cmp(&(a.head_rate - a.base_rate))
                .then_with(|| (&a.file, a.line).cmp(&(&b.file, b.line)))
        });
        sites.truncate(MAX_SITES);
        out.insert(k.clone(), sites);
    }
    out
}

fn count_sites(
    frame: &Frame,
    wanted: &BTreeMap<(String, Vec<String>), (f64, f64)>,
    into: &mut BTreeMap<(String, Vec<String>), BTreeMap<SiteKey, i64>>,
) {
    for batch in frame
        .run
        .tables
        .get("sql_statements")
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (Some(function), Some(file)) = (
            strings(batch, "code_function_name"),
            strings(batch, "code_file_path"),
        ) else {
            continue;
        };
        let line = ints(batch, "code_line_number");
        let (Some(pid), Some(start), Some(name), Some(system), Some(text), Some(calls)) = (
            ints(batch, "process_pid"),
            ints(batch, "process_start_time"),
            strings(batch, "process_name"),
            strings(batch, "db_system_name"),
            strings(batch, "db_query_text"),
            ints(batch, "calls"),
        ) else {
            continue;
        };
        let (runs, hosts) = super::aggregate::run_host(batch);
        for i in 0..batch.num_rows() {
            if function[i].is_empty() && file[i].is_empty() {
                continue;
            }
            let group = frame.groups.get(
                (&runs[i], &hosts[i]),
                pid[i].unwrap_or(0),
                start[i],
                &name[i],
                false,
            );
            let key = (group, vec![system[i].clone(), text[i].clone()]);
            if !wanted.contains_key(&key) {
                continue;
            }
            let site = (
                function[i].clone(),
                file[i].clone(),
                line.as_ref().and_then(|l| l[i]),
            );
            *into.entry(key).or_default().entry(site).or_default() += calls[i].unwrap_or(0);
        }
    }
}
