// scalp-bpf report: builds the page from the inline JSON (#data) with uPlot. Loads nothing.
"use strict";
(function () {
  const body = document.body;
  let errors = 0, blocked = 0;
  window.addEventListener("error", () => { errors += 1; body.dataset.errors = errors; });
  document.addEventListener("securitypolicyviolation", () => { blocked += 1; body.dataset.cspViolations = blocked; });
  body.dataset.errors = 0;
  body.dataset.cspViolations = 0;
  const t0 = performance.now();
  const D = JSON.parse(document.getElementById("data").textContent);
  const root = document.getElementById("report");

  // ---- formatting ------------------------------------------------------------------------
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  };
  const count = (n) => (n === null || n === undefined) ? "—" : Math.round(n).toLocaleString("en-US");
  const dur = (ns) => {
    if (ns === null || ns === undefined) return "—";
    if (ns < 1e3) return ns.toFixed(0) + "ns";
    if (ns < 1e6) return (ns / 1e3).toFixed(1) + "µs";
    if (ns < 1e9) return (ns / 1e6).toFixed(2) + "ms";
    return (ns / 1e9).toFixed(2) + "s";
  };
  const bytes = (b) => {
    if (b === null || b === undefined) return "—";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0, v = b;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i += 1; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + u[i];
  };
  const fmtCol = (col, v) => {
    if (col.endsWith("_ns_sum") || col.endsWith("_ns")) return dur(v);
    if (col.includes("bytes")) return bytes(v);
    return count(v);
  };
  const short = (v) => {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return String(Math.round(v * 100) / 100);
  };
  const unitFmt = (unit) => {
    if (unit === "ns") return dur;
    if (unit === "B/s") return (v) => bytes(v) + "/s";
    if (unit === "B") return bytes;
    return (v) => short(v) + (unit || "");
  };
  const anchor = (s) => "s-" + s.replace(/[^A-Za-z0-9_-]/g, "_");

  // ---- charts ----------------------------------------------------------------------------
  const PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a3069", "#e16f24", "#57606a", "#d63384"];
  const pending = [];
  const chartBox = (title, attrs) => {
    const box = el("div", Object.assign({ class: "chart" }, attrs), el("h4", {}, title));
    const area = el("div", { class: "plot" });
    box.append(area);
    return [box, area];
  };
  const width = () => Math.max(480, Math.min(560, Math.floor((root.clientWidth || 1100) / 2) - 20));
  function timeline(tl, xs) {
    const [box, area] = chartBox(tl.title, { "data-chart": "timeline", "data-table": tl.table });
    const f = unitFmt(tl.unit);
    // Percentiles exist only in intervals with calls: join them across the empty ones, and
    // show each point (a lone interval is a dot, not nothing).
    const sparse = tl.unit === "ns";
    const series = [{}].concat(tl.series.map((s, i) => ({
      label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: sparse,
      points: sparse ? { show: true, size: 7, fill: PALETTE[i % PALETTE.length] } : {},
      value: (u, v) => v === null || v === undefined ? "—" : f(v),
    })));
    const data = [xs].concat(tl.series.map((s) => s.values));
    pending.push(() => new uPlot({
      width: width(), height: 220, series,
      axes: [{}, { values: (u, vals) => vals.map(f), size: 70 }],
      scales: { x: { time: true } },
    }, data, area));
    return box;
  }
  function histogram(h) {
    const [box, area] = chartBox(`${h.title}: ${h.what} histogram (calls per log2 bucket)`, { "data-chart": "histogram", "data-table": h.table });
    const xs = h.lo_ns.map((_, i) => i);
    pending.push(() => new uPlot({
      width: width(), height: 200,
      series: [{ value: (u, i) => i === null ? "—" : "≥ " + dur(h.lo_ns[i]) },
        { label: "calls", fill: "rgba(9,105,218,0.35)", stroke: "#0969da", paths: uPlot.paths.bars({ size: [0.8, 60] }), points: { show: false } }],
      axes: [{ values: (u, vals) => vals.map((i) => Number.isInteger(i) && h.lo_ns[i] !== undefined ? dur(h.lo_ns[i]) : ""), space: 50 },
        { values: (u, vals) => vals.map(short), size: 60 }],
      scales: { x: { time: false, range: [-0.5, xs.length - 0.5] } },
    }, [xs, h.counts], area));
    return box;
  }

  // ---- tables ----------------------------------------------------------------------------
  function statsTable(t, group) {
    const extra = t.counters.filter((c) => c !== t.n);
    const head = el("tr", {}, ...t.keys.map((k) => el("th", {}, k)),
      el("th", { class: "num" }, "N (" + t.n + ")"),
      ...(t.histogram ? ["min", "max", "avg", "p50", "p97", "p99"].map((c) => el("th", { class: "num" }, c)) : []),
      ...extra.map((c) => el("th", { class: "num" }, c)));
    const table = el("table", { "data-table": t.table, "data-group": group, "data-keys": JSON.stringify(t.keys) }, el("thead", {}, head));
    const tb = el("tbody");
    for (const r of t.rows) {
      const cell = (col, v, text) => el("td", { class: "num", "data-col": col, "data-v": v === null ? "" : String(v) }, text);
      tb.append(el("tr", { "data-key": JSON.stringify(r.key) },
        ...r.key.map((k, i) => el("td", { class: "key", "data-col": t.keys[i] }, k === "" ? "—" : k)),
        cell(t.n, r.counters[t.n], count(r.counters[t.n])),
        ...(t.histogram ? ["min_ns", "max_ns", "avg_ns", "p50_ns", "p97_ns", "p99_ns"].map((c) => cell(c, r[c], dur(r[c]))) : []),
        ...extra.map((c) => cell(c, r.counters[c], fmtCol(c, r.counters[c])))));
    }
    table.append(tb);
    const more = t.total_rows > t.rows.length ? el("div", { class: "more" }, `top ${t.rows.length} of ${t.total_rows} rows, by ${t.n === "calls" ? "calls" : t.n}`) : null;
    return [el("h4", {}, t.title), table, more];
  }
  function simpleTable(attrs, cols, rows) {
    const table = el("table", attrs, el("thead", {}, el("tr", {}, ...cols.map(([c, , num]) => el("th", { class: num ? "num" : "" }, c)))));
    const tb = el("tbody");
    for (const r of rows) tb.append(el("tr", {}, ...cols.map(([, f, num, col]) => el("td", { class: num ? "num" : "key", "data-col": col }, f(r)))));
    table.append(tb);
    return table;
  }

  // ---- page ------------------------------------------------------------------------------
  const xs = D.t;
  root.append(el("h1", {}, "scalp-bpf report"));
  root.append(el("div", { class: "meta" },
    `run ${D.run}` + (D.run_start ? ` — ${D.run_start} → ${D.run_end || "?"}` : "") +
    ` — ${D.seconds === null ? "?" : D.seconds.toFixed(1) + " s"} traced, ${xs.length} intervals, ${D.processes} process${D.processes === 1 ? "" : "es"}, ${D.services.length} service${D.services.length === 1 ? "" : "s"}` +
    (D.unsealed_intervals ? ` — ${D.unsealed_intervals} intervals read from the write-ahead log (live or killed run)` : "")));
  if (D.drops && D.drops.length) root.append(el("div", { class: "banner bad" }, "Dropped: " + JSON.stringify(D.drops)));
  const nav = el("nav", {}, ...D.services.map((s) => el("a", { href: "#" + anchor(s.name) }, s.name)));
  if (D.system) nav.append(el("a", { href: "#system" }, "system"));
  if (D.diff) nav.append(el("a", { href: "#diff" }, "diff against base"));
  root.append(nav);
  root.append(el("p", { class: "note" },
    "Latency columns come from log2 histograms (buckets [2^(b-1), 2^b) ns). min and max are the bounds of the " +
    "lowest and highest non-empty buckets: the fastest call took at least min, the slowest less than max (the open " +
    "last bucket's bound is twice its lower bound). p50/p97/p99 interpolate linearly inside the bucket where the rank " +
    "falls, as `scalp-bpf summary` computes them; avg is the duration sum divided by N. Rates are per second of each interval."));

  if (D.diff) root.append(diffSection(D.diff));

  for (const s of D.services) {
    const sec = el("section", { id: anchor(s.name), "data-service": s.name }, el("h2", {}, "Service " + s.name));
    if (s.timelines.length) {
      sec.append(el("h3", {}, "Over the run"));
      sec.append(el("div", { class: "charts" }, ...s.timelines.map((tl) => timeline(tl, xs))));
    }
    if (s.histograms.length) {
      sec.append(el("h3", {}, "Latency histograms"));
      sec.append(el("div", { class: "charts" }, ...s.histograms.map(histogram)));
    }
    if (s.tables.length) {
      sec.append(el("h3", {}, "Tables"));
      for (const t of s.tables) sec.append(...statsTable(t, s.name).filter((x) => x));
    }
    const tk = s.talkers || {};
    if ((tk.processes || []).length || (tk.files || []).length || (tk.devices || []).length) {
      sec.append(el("h3", {}, "Top talkers"));
      if ((tk.processes || []).length) sec.append(el("h4", {}, "Processes"), simpleTable({ "data-talkers": "processes" }, [
        ["process", (r) => r.process, false, "process"], ["syscalls", (r) => count(r.syscalls), true, "syscalls"],
        ["failed", (r) => count(r.errors), true, "errors"], ["file bytes", (r) => bytes(r.file_bytes), true, "file_bytes"],
        ["block bytes", (r) => bytes(r.block_bytes), true, "block_bytes"]], tk.processes));
      if ((tk.files || []).length) sec.append(el("h4", {}, "Files"), simpleTable({ "data-talkers": "files" }, [
        ["path", (r) => r.path, false, "path"], ["read", (r) => bytes(r.read_bytes), true, "read_bytes"],
        ["written", (r) => bytes(r.write_bytes), true, "write_bytes"]], tk.files));
      if ((tk.devices || []).length) sec.append(el("h4", {}, "Devices"), simpleTable({ "data-talkers": "devices" }, [
        ["device", (r) => r.device, false, "device"], ["requests", (r) => count(r.requests), true, "requests"],
        ["read", (r) => bytes(r.read_bytes), true, "read_bytes"], ["written", (r) => bytes(r.write_bytes), true, "write_bytes"],
        ["all bytes", (r) => bytes(r.bytes), true, "bytes"]], tk.devices));
    }
    root.append(sec);
  }

  if (D.system) {
    const sec = el("section", { id: "system" }, el("h2", {}, "System"));
    sec.append(el("div", { class: "charts" }, ...D.system.timelines.map((tl) => timeline(tl, xs))));
    root.append(sec);
  }

  function diffSection(d) {
    const sec = el("section", { id: "diff", "data-regressed": String(d.regressed) }, el("h2", {}, "Compared with the base run"));
    const n = d.regressions.length;
    sec.append(el("div", { class: "banner " + (d.regressed ? "bad" : "good") },
      d.regressed ? `${n} regression${n === 1 ? "" : "s"} (scalp-bpf diff would exit 1)` : "no regression (scalp-bpf diff would exit 0)"));
    sec.append(el("div", { class: "meta" }, `base ${d.base} → head ${d.head}; counts per ${d.per}; intervals at ${Math.round(d.confidence * 100)}% confidence (${d.resamples} resamples); verdicts and thresholds are diff's defaults`));
    const sections = [["Regressions", d.regressions], ["Improvements", d.improvements], ["Only in base", d.gone],
      ["New in head, below the floor for new keys", d.new_below_floor], ["Unchanged", d.unchanged]];
    const value = (c, v) => {
      if (v === null || v === undefined) return "—";
      if (c.metric.endsWith(".p97")) return dur(v);
      const per = { request: "/request", unit: "/unit", second: "/s", run: "" }[c.per] || "";
      return (Math.abs(v) < 10 && v !== 0 ? v.toFixed(3) : count(v)) + per;
    };
    for (const [title, list] of sections) {
      if (!list || !list.length) continue;
      sec.append(el("h3", {}, `${title} (${list.length})`));
      const table = el("table", { "data-diff": title }, el("thead", {}, el("tr", {},
        ...["metric", "group", "key", "base", "head", "change", "verdict", "where"].map((h) => el("th", { class: ["base", "head", "change"].includes(h) ? "num" : "" }, h)))));
      const tb = el("tbody");
      for (const c of list) {
        const where = (c.routes || []).map((r) => `${r.method} ${r.route}: ${r.what} ${r.base === null ? "—" : r.base.toFixed(2)} → ${r.head === null ? "—" : r.head.toFixed(2)} per request`)
          .concat((c.call_sites || []).map((s) => `at ${s.file}${s.line ? ":" + s.line : ""} in ${s.function}`)).join("; ");
        tb.append(el("tr", { class: c.verdict.replace(/ /g, "-"), "data-metric": c.metric, "data-verdict": c.verdict },
          el("td", {}, c.metric), el("td", {}, c.group), el("td", { class: "key" }, Object.values(c.key).join(" · ")),
          el("td", { class: "num", "data-v": c.base_normalized === null ? "" : String(c.base_normalized) }, value(c, c.base_normalized)),
          el("td", { class: "num", "data-v": c.head_normalized === null ? "" : String(c.head_normalized) }, value(c, c.head_normalized)),
          el("td", { class: "num" }, c.change_text),
          el("td", { class: "verdict-" + c.verdict.replace(/ /g, "-") }, c.verdict), el("td", {}, where)));
      }
      table.append(tb);
      sec.append(table);
    }
    return sec;
  }

  for (const draw of pending) draw();
  // uPlot sizes its canvases in a microtask it queued while drawing: measure after it.
  queueMicrotask(() => {
    // Where each chart's canvas lies on the page (CSS pixels), for tests that look at pixels.
    for (const box of document.querySelectorAll(".chart")) {
      const c = box.querySelector("canvas");
      if (!c) continue;
      const r = c.getBoundingClientRect();
      box.dataset.rect = JSON.stringify([Math.round(r.left + scrollX), Math.round(r.top + scrollY), Math.round(r.width), Math.round(r.height)]);
    }
    body.dataset.charts = pending.length;
    body.dataset.renderMs = Math.round(performance.now() - t0);
    body.dataset.rendered = "1";
  });
})();
