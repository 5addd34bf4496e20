//! Drawing: header, view tabs, the process table (services and their processes), the view's
//! detail table, the status line (scalp-bpf's own CPU, RSS, drops) and the keys. ratatui
//! draws into a buffer and writes only the cells that changed: no flicker.

use std::{cmp::Ordering, collections::BTreeMap};

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize as _},
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph, Row, Table},
};

use super::{
    app::{App, Focus},
    model::{Model, ProcId},
    views::{Cell, Column, Kind, VIEWS, format},
};

pub fn draw(f: &mut Frame<'_>, app: &App) {
    let view = app.view();
    let machine = machine_line(app.shown());
    let [header, tabs, body, status, keys] = Layout::vertical([
        Constraint::Length(if machine.is_some() { 2 } else { 1 }),
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let mut lines = vec![header_line(app)];
    lines.extend(machine);
    f.render_widget(Paragraph::new(lines), header);
    f.render_widget(Paragraph::new(tabs_line(app)), tabs);
    if view.process_columns.is_empty() {
        detail(f, app, body);
    } else {
        // The processes get what they need up to 40 % of the body; the details the rest.
        // At least one row: the "no process" line.
        let wanted = process_rows(app).len().max(1) as u16 + 2;
        let most = (body.height * 2 / 5).max(4);
        let [procs, details] =
            Layout::vertical([Constraint::Length(wanted.min(most)), Constraint::Min(3)])
                .areas(body);
        processes(f, app, procs);
        detail(f, app, details);
    }
    f.render_widget(Paragraph::new(status_line(app)), status);
    f.render_widget(Paragraph::new(keys_line(app)), keys);
}

fn header_line(app: &App) -> Line<'static> {
    let m = app.shown();
    let live = m.procs.values().filter(|p| p.alive).count();
    let up = m.elapsed_secs as u64;
    let mut spans = vec![
        Span::from("scalp-bpf top ").bold(),
        Span::from(format!(
            "{}  {live} live/{} processes  every {}  up {:02}:{:02}:{:02}",
            app.header.targets,
            m.procs.len(),
            humantime::format_duration(app.header.interval),
            up / 3600,
            up / 60 % 60,
            up % 60
        )),
    ];
    if app.paused() {
        spans.push(Span::from("  PAUSED").bold().reversed());
    }
    Line::from(spans)
}

/// The machine in the last interval (the system tables), most telling first so that 80
/// columns keep CPU, load and memory.
fn machine_line(m: &Model) -> Option<Line<'static>> {
    let s = m.machine.as_ref()?;
    let pct = |x: f64| format!("{:.0}", x * 100.0);
    let bytes = |v: Option<i64>| format(Kind::Bytes, v.map(|b| b as f64), 7);
    let rate = |v: f64| format(Kind::ByteRate, Some(v), 8);
    let load = s
        .load_1m
        .map_or_else(|| "-".to_owned(), |l| format!("{l:.2}"));
    Some(Line::from(format!(
        "machine: CPU usr {}% sys {}% io {}% st {}%  load {load}  mem {}/{}  disk r {} w {}  net rx {} tx {}",
        pct(s.user),
        pct(s.system),
        pct(s.iowait),
        pct(s.steal),
        bytes(s.mem_used),
        bytes(s.mem_total),
        rate(s.disk_read),
        rate(s.disk_write),
        rate(s.net_rx),
        rate(s.net_tx),
    )))
}

fn tabs_line(app: &App) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, v) in VIEWS.iter().enumerate() {
        let text = format!(" {} {} ", v.key, v.name);
        spans.push(if i == app.view {
            Span::from(text).reversed().bold()
        } else {
            Span::from(text)
        });
    }
    Line::from(spans)
}

/// A process table row: a service (with how many processes) or one of its processes.
struct ProcRow {
    name: String,
    pid: Option<u32>,
    alive: bool,
    cells: Vec<Cell>,
}

/// Services, each followed by its processes, both sorted by the sort column.
fn process_rows(app: &App) -> Vec<ProcRow> {
    let m = app.shown();
    let view = app.view();
    let sort = app.sort_of(Focus::Processes);
    let mut services: BTreeMap<&str, Vec<ProcId>> = BTreeMap::new();
    for (id, p) in &m.procs {
        if app.keeps(id) {
            services.entry(p.service.as_str()).or_default().push(*id);
        }
    }
    let mut groups: Vec<(ProcRow, Vec<ProcRow>)> = services
        .into_iter()
        .map(|(service, ids)| {
            let mut procs: Vec<ProcRow> = ids
                .iter()
                .map(|id| {
                    let p = &m.procs[id];
                    ProcRow {
                        name: format!("  {}", p.name),
                        pid: Some(id.pid),
                        alive: p.alive,
                        cells: (view.process_cells)(m, &|x| x == id),
                    }
                })
                .collect();
            procs.sort_by(|a, b| by_column(&a.cells, &b.cells, sort));
            let head = ProcRow {
                name: format!("{service} [{}]", ids.len()),
                pid: None,
                alive: procs.iter().any(|p| p.alive),
                cells: (view.process_cells)(m, &|x| ids.contains(x)),
            };
            (head, procs)
        })
        .collect();
    groups.sort_by(|a, b| by_column(&a.0.cells, &b.0.cells, sort));
    groups
        .into_iter()
        .flat_map(|(head, procs)| std::iter::once(head).chain(procs))
        .collect()
}

/// Numbers descending (nothing last), text ascending.
fn by_column(a: &[Cell], b: &[Cell], i: usize) -> Ordering {
    match (a.get(i), b.get(i)) {
        (Some(Cell::Num(x)), Some(Cell::Num(y))) => match (x, y) {
            (Some(x), Some(y)) => y.partial_cmp(x).unwrap_or(Ordering::Equal),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        },
        (Some(Cell::Text(x)), Some(Cell::Text(y))) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

fn title(text: &str, focused: bool) -> Block<'static> {
    let mut line = Line::from(format!(" {text} "));
    if focused {
        line = line.bold().reversed();
    }
    Block::new().borders(Borders::TOP).title(line)
}

fn header_row(columns: &[Column], sorted: usize, offset: usize) -> Row<'static> {
    let cells: Vec<Line<'static>> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mark = if i + offset == sorted { "▼" } else { "" };
            let text = format!("{}{mark}", c.title);
            if c.kind == Kind::Text {
                Line::from(text)
            } else {
                Line::from(text).right_aligned()
            }
        })
        .collect();
    Row::new(cells).style(Style::new().add_modifier(Modifier::BOLD))
}

fn cell_line(c: &Cell, column: &Column) -> Line<'static> {
    match c {
        Cell::Text(t) => Line::from(t.clone()),
        Cell::Num(v) => Line::from(format(column.kind, *v, column.width as usize)).right_aligned(),
    }
}

fn widths(columns: &[Column]) -> Vec<Constraint> {
    columns
        .iter()
        .map(|c| match c.kind {
            Kind::Text => Constraint::Min(c.width),
            _ => Constraint::Length(c.width),
        })
        .collect()
}

fn processes(f: &mut Frame<'_>, app: &App, area: Rect) {
    let view = app.view();
    let sort = app.sort_of(Focus::Processes);
    let rows: Vec<Row<'static>> = process_rows(app)
        .into_iter()
        .map(|r| {
            let mut cells = vec![
                Line::from(r.name),
                // The "(ended)" row of folded processes has no PID.
                Line::from(
                    r.pid
                        .filter(|p| *p != 0)
                        .map_or_else(String::new, |p| p.to_string()),
                )
                .right_aligned(),
            ];
            cells.extend(
                r.cells
                    .iter()
                    .zip(view.process_columns)
                    .map(|(c, col)| cell_line(c, col)),
            );
            let row = Row::new(cells);
            match (r.pid, r.alive) {
                (None, _) => row.bold(),
                (Some(_), false) => row.dim(),
                _ => row,
            }
        })
        .collect();
    let mut columns = vec![
        Column::new("service / process", 14, Kind::Text),
        Column::new("PID", 7, Kind::Count),
    ];
    columns.extend(view.process_columns);
    let header = header_row(&columns, sort + 2, 0);
    let empty = rows.is_empty();
    let table = Table::new(rows, widths(&columns))
        .header(header)
        .column_spacing(1)
        .block(title(
            "processes (totals since top started; rates over the last interval)",
            app.focus == Focus::Processes,
        ));
    f.render_widget(table, area);
    if empty {
        let msg = if app.filter.is_empty() {
            "waiting for the first interval…"
        } else {
            "no process matches the filter"
        };
        let at = Rect {
            y: area.y + 2,
            height: 1,
            ..area
        };
        f.render_widget(Paragraph::new(msg), at);
    }
}

fn detail(f: &mut Frame<'_>, app: &App, area: Rect) {
    let view = app.view();
    let block = title(view.detail_title, app.focus == Focus::Detail);
    if !view.tables.is_empty() && !view.tables.iter().any(|t| app.tables.contains(t)) {
        let msg = format!(
            "not traced: none of {} (start top with --tracers including them)",
            view.tables.join(", ")
        );
        f.render_widget(Paragraph::new(msg).block(block), area);
        return;
    }
    let m = app.shown();
    let sort = app.sort_of(Focus::Detail);
    let mut rows = (view.detail_rows)(m, &|id| app.keeps(id));
    rows.sort_by(|a, b| by_column(a, b, sort));
    let empty = rows.is_empty();
    let table_rows: Vec<Row<'static>> = rows
        .iter()
        .map(|r| {
            Row::new(
                r.iter()
                    .zip(view.detail_columns)
                    .map(|(c, col)| cell_line(c, col))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let table = Table::new(table_rows, widths(view.detail_columns))
        .header(header_row(view.detail_columns, sort, 0))
        .column_spacing(1)
        .block(block);
    f.render_widget(table, area);
    if empty && area.height > 2 {
        let at = Rect {
            y: area.y + 2,
            height: 1,
            ..area
        };
        f.render_widget(Paragraph::new("nothing yet"), at);
    }
}

fn status_line(app: &App) -> Line<'static> {
    let m: &Model = &app.live;
    let cpu = app
        .usage
        .cpu_percent
        .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%"));
    let rss = format(Kind::Bytes, app.usage.rss_bytes.map(|b| b as f64), 8);
    let mut spans = vec![Span::from(format!("scalp-bpf CPU {cpu} RSS {rss}  "))];
    // Every drop is shown: the total, the last interval's, and the reasons (all in view d).
    let total = m.drops_total();
    if total == 0 {
        spans.push(Span::from("drops 0"));
    } else {
        let last: i64 = m.drops.values().map(|d| d.last).sum();
        let reasons: Vec<String> = m
            .drops
            .iter()
            .filter(|(_, d)| d.total > 0)
            .map(|((t, r), d)| format!("{t} {r} {}", d.total))
            .collect();
        spans.push(
            Span::from(format!(
                "DROPS {total} (+{last}): {} [d]",
                reasons.join(", ")
            ))
            .bold()
            .reversed(),
        );
    }
    if let Some(out) = &app.header.output {
        spans.push(Span::from(format!("  writing {out}")));
    }
    Line::from(spans)
}

fn keys_line(app: &App) -> Line<'static> {
    if app.editing {
        return Line::from(format!(
            "filter processes: {}_   (Enter keeps it, Esc clears)",
            app.filter
        ));
    }
    let mut text = String::new();
    if !app.filter.is_empty() {
        text.push_str(&format!("filter \"{}\" (Esc clears)  ", app.filter));
    }
    text.push_str("q quit  1-5 d views  s sort  Tab focus  / filter  p pause");
    Line::from(text).dim()
}
