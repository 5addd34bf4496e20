"""`scalp-bpf report`: the one-file HTML page of a run, opened in headless Chromium from file://.

A known workload (syscalls that succeed and fail, a file written and fsync'd, SQL on the tests'
MariaDB) is traced, reported and loaded; the page must run without a console message or a
network request, draw its charts (pixels in the screenshot, not a blank canvas), and its tables
must show exactly what `scalp-bpf summary --format json` says of the same run. With --base, its
comparison must be `diff --format json --all`'s, regressions highlighted."""
import datetime
import json
import pathlib
import shutil
import socket
import subprocess
import threading
import time
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import PYTHON, WORKLOADS, run_scalp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH = 1280
# Chromium's own background traffic (component updates, time sync) goes through the proxy too
# when it is not switched off; these hosts are Chromium's, never the page's.
CHROMIUM_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")
SELECTS, INSERTS, FAILED = 300, 40, 12
GETPPID, FAIL_OPENAT = 20000, 300


class Proxy:
    """A TCP listener Chromium is told to use as its HTTP proxy: every request the page made to
    the network would arrive here."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.done = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.done:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                self.requests.append(conn.recv(4096).split(b"\r\n")[0].decode(errors="replace"))
            except OSError:
                self.requests.append("(no request line)")
            conn.close()

    def close(self):
        self.done = True
        self.thread.join()
        self.sock.close()

    def page_requests(self):
        """Requests other than Chromium's own (`GET http://host/…`, `CONNECT host:443 …`)."""
        def host(line):
            parts = line.split(" ")
            return parts[1].split("//")[-1].split("/")[0].split(":")[0] if len(parts) > 1 else line
        return [r for r in self.requests if not host(r).endswith(CHROMIUM_HOSTS)]


def chromium(page, *args, height=2000):
    """Runs headless Chromium on file://page; returns (stdout, stderr, proxied requests, seconds)."""
    proxy = Proxy()
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--force-device-scale-factor=1", f"--window-size={WIDTH},{height}",
           "--enable-logging=stderr", "--v=0", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-default-apps",
           f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
           *args, pathlib.Path(page).resolve().as_uri()]
    start = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    time.sleep(0.3)
    proxy.close()
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr, proxy.page_requests(), took


def console_lines(stderr):
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


class Dom(HTMLParser):
    """The dumped DOM: body attributes, the page's tables (cells' data-col/data-v), the chart
    boxes, the diff rows and the inline data."""

    def __init__(self, text):
        super().__init__()
        self.body = {}
        self.tables = {}  # (table, group) -> {"keys": [...], "rows": {key tuple: {col: v}}}
        self.charts = []
        self.diff_rows = []
        self.sections = set()
        self.csp = None
        self.data = None
        self._table = self._row = None
        self._in_data = False
        self._data_text = []
        self.feed(text)
        self.data = json.loads("".join(self._data_text))

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.csp = a.get("content")
        elif tag == "section" and a.get("id"):
            self.sections.add(a["id"])
        elif tag == "script" and a.get("id") == "data":
            self._in_data = True
        elif tag == "div" and "chart" in a.get("class", "").split():
            self.charts.append(a)
        elif tag == "table" and "data-table" in a:
            self._table = self.tables.setdefault((a["data-table"], a["data-group"]),
                                                 {"keys": json.loads(a["data-keys"]), "rows": {}})
        elif tag == "tr" and self._table is not None and "data-key" in a:
            self._row = self._table["rows"].setdefault(tuple(json.loads(a["data-key"])), {})
        elif tag == "td" and self._row is not None and "data-v" in a:
            v = a["data-v"]
            self._row[a["data-col"]] = None if v == "" else float(v)
        elif tag == "tr" and "data-verdict" in a:
            self.diff_rows.append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = self._row = None
        elif tag == "tr":
            self._row = None
        elif tag == "script":
            self._in_data = False

    def handle_data(self, data):
        if self._in_data:
            self._data_text.append(data)


def load(page):
    """Loads the page twice (DOM after its scripts, then a screenshot tall enough for every
    chart); returns (Dom, screenshot Image, console lines, proxied requests, load seconds)."""
    out, err, requests, took = chromium(page, "--dump-dom")
    dom = Dom(out)
    bottom = max((json.loads(c["data-rect"])[1] + json.loads(c["data-rect"])[3] for c in dom.charts if "data-rect" in c),
                 default=800)
    shot = pathlib.Path(page).with_suffix(".png")
    _, err2, requests2, _ = chromium(page, f"--screenshot={shot}", height=bottom + 40)
    return dom, Image.open(shot).convert("RGB"), console_lines(err + err2), requests + requests2, took


def trace(out, mariadb, ping=0):
    """One service (`sh`) doing known work: syscalls, failed opens, a 4 MiB file written and
    fsync'd, and SQL statements on MariaDB (and `ping` COM_PINGs)."""
    script = (f"{PYTHON} {WORKLOADS / 'sysc.py'} --getppid {GETPPID} --fail-openat {FAIL_OPENAT} && "
              f"{PYTHON} {WORKLOADS / 'fileio.py'} buffered --path {out}.dat --bytes {4 << 20} --fsync && "
              f"{PYTHON} {WORKLOADS / 'sql.py'} mysql --port {mariadb.port} --select {SELECTS} "
              f"--insert {INSERTS} --failed {FAILED} --ping {ping}")
    # 50 ms intervals: the work takes 0.3 s or so, and the timelines need several points.
    r = run_scalp("run", "--output", out, "--interval", "50ms", "--files", "--sql-port", mariadb.port,
                  "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def traced(tmp_path_factory, mariadb):
    base = tmp_path_factory.mktemp("report")
    run = trace(base / "run", mariadb)
    page = base / "report.html"
    r = run_scalp("report", run, "--output", page)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"scalp-bpf: wrote {page} (")
    dom, shot, console, requests, took = load(page)
    return {"run": run, "page": page, "dom": dom, "shot": shot, "console": console,
            "requests": requests, "took": took, "base": base}


def test_the_page_runs_offline_without_errors(traced):
    dom = traced["dom"]
    assert dom.csp is not None and dom.csp.startswith("default-src 'none';"), dom.csp
    assert dom.body.get("data-rendered") == "1", dom.body
    assert dom.body.get("data-errors") == "0"
    assert dom.body.get("data-csp-violations") == "0"
    assert traced["console"] == []
    assert traced["requests"] == []
    # One file: nothing beside it is needed, and it says where nothing comes from.
    html = traced["page"].read_text()
    assert ' src="' not in html and ' href="http' not in html
    assert traced["page"].stat().st_size < 1 << 20


def test_the_harness_sees_errors_and_requests(traced, tmp_path):
    """The same checks on a spoiled copy of the page must fail: a script error, a console
    message, a request the CSP blocks, and — with the CSP removed — a request that goes out."""
    html = traced["page"].read_text()
    spoiled = tmp_path / "spoiled.html"
    spoiled.write_text(html.replace("</body>", '<img src="http://198.51.100.7:8123/x.png">'
                                               '<script>console.error("spoiled"); throw new Error("spoiled")</script></body>'))
    dom = Dom(chromium(spoiled, "--dump-dom")[0])
    _, err, _, _ = chromium(spoiled, "--dump-dom")
    assert dom.body.get("data-errors") == "1"
    assert dom.body.get("data-csp-violations") != "0"
    assert len(console_lines(err)) >= 2
    open_page = tmp_path / "open.html"
    open_page.write_text(spoiled.read_text().replace('http-equiv="Content-Security-Policy"', 'name="no-csp"'))
    _, _, requests, _ = chromium(open_page, "--dump-dom")
    assert any("198.51.100.7:8123" in r for r in requests), requests


def test_the_tables_are_what_summary_says(traced):
    r = run_scalp("summary", traced["run"], "--format", "json", "--top", "200")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    tables = traced["dom"].tables
    compared = 0
    for t in summary["tables"]:
        for g in t["groups"]:
            page = tables.get((t["table"], g["group"]))
            assert page is not None, f"no {t['table']} table for {g['group']} in the page"
            assert len(page["rows"]) == len(g["rows"]) == g["total_rows"], (t["table"], g["group"])
            for row in g["rows"]:
                key = tuple(row[k] for k in page["keys"])
                cells = page["rows"][key]
                for col, v in row.items():
                    if col in page["keys"]:
                        continue
                    assert cells[col] == v, (t["table"], key, col, cells[col], v)
                    compared += 1
    assert compared > 100
    # The tables against the workload itself, not only against summary.
    sh = {g for (t, g) in tables if t == "syscalls"}
    assert sh == {"sh"}, sh
    sys = tables[("syscalls", "sh")]["rows"]
    assert sys[("getppid",)]["calls"] >= GETPPID
    assert sys[("openat",)]["errors"] >= FAIL_OPENAT
    assert sys[("fsync",)]["calls"] >= 1
    sql = tables[("sql_statements", "sh")]["rows"]
    select = [v for k, v in sql.items() if k[1] == "SELECT id, v FROM scalp_items WHERE id = ? AND v <> ?"]
    assert sum(v["calls"] for v in select) == SELECTS, sql.keys()
    # min ≤ p50 ≤ p97 ≤ p99 ≤ max, avg within [min, max]: bucket bounds around the percentiles.
    for key, c in sys.items():
        if c["p50_ns"] is not None:
            assert c["min_ns"] <= c["p50_ns"] <= c["p97_ns"] <= c["p99_ns"] <= c["max_ns"], key


def test_the_timelines_add_up_to_the_tables(traced):
    """Each timeline's rate times its interval's length, summed, is the table's total."""
    data = traced["dom"].data
    (service,) = [s for s in data["services"] if s["name"] == "sh"]
    ts = data["t"]
    assert len(ts) >= 4
    rows = traced["dom"].tables[("syscalls", "sh")]["rows"].values()
    lengths = interval_lengths(traced["run"], ts)
    for title, col in [("System calls/s", "calls"), ("Failed system calls/s", "errors")]:
        (tl,) = [t for t in service["timelines"] if t["title"] == title]
        total = sum(v * l for v, l in zip(tl["series"][0]["values"], lengths))
        assert total == pytest.approx(sum(r[col] for r in rows), rel=1e-4), title
    (sql,) = [t for t in service["timelines"] if t["title"] == "SQL statements/s"]
    calls = sum(v * l for v, l in zip(sql["series"][0]["values"], lengths))
    assert calls == pytest.approx(sum(r["calls"] for r in traced["dom"].tables[("sql_statements", "sh")]["rows"].values()), rel=1e-4)
    titles = [t["title"] for t in service["timelines"]]
    assert "SQL latency (percentiles per interval)" in titles
    assert "File I/O bytes/s (by descriptor kind and operation)" in titles


def interval_lengths(run, starts):
    """Each interval's length in seconds, from the Parquet files (the page does not carry them):
    from every table, as an interval with no syscalls row (a 50 ms one where the service made no
    call) is still on the page's axis through the others."""
    by = {}
    for table in ["syscalls", "sql_statements", "fileio", "system"]:
        if not (pathlib.Path(run) / table).is_dir():
            continue
        t = pq.read_table(pathlib.Path(run) / table, columns=["interval_start", "interval_end"])
        us = lambda c: t.column(c).cast(pa.int64()).to_pylist()
        by.update({s: (e - s) / 1e6 for s, e in zip(us("interval_start"), us("interval_end"))})
    return [by[round(s * 1e6)] for s in starts]


# The first three series' colours (the page's palette): every chart draws at least one.
SERIES_COLOURS = [(9, 105, 218), (207, 34, 46), (26, 127, 55)]


def series_pixels(img, rect):
    """Pixels of a series' colour (lines, points, bars) inside a canvas."""
    x, y, w, h = rect
    crop = img.crop((x, y, x + w, y + h))
    near = lambda p: any(sum(abs(a - b) for a, b in zip(p, c)) < 60 for c in SERIES_COLOURS)
    return sum(1 for p in crop.get_flattened_data() if near(p)) if hasattr(crop, "get_flattened_data") \
        else sum(1 for p in crop.getdata() if near(p))


def test_the_charts_are_drawn(traced):
    dom, img = traced["dom"], traced["shot"]
    charts = [c for c in dom.charts if "data-rect" in c]
    assert len(charts) == int(dom.body["data-charts"])
    kinds = {c["data-chart"] for c in charts}
    assert kinds == {"timeline", "histogram"}, kinds
    assert len(charts) >= 10
    for c in charts:
        rect = json.loads(c["data-rect"])
        assert rect[2] > 300 and rect[3] > 100, c
        assert rect[1] + rect[3] <= img.height, (rect, img.height)
        # A lone point is a 7-pixel dot, a series of zeros a line along the bottom.
        assert series_pixels(img, rect) > 30, (c["data-table"], c["data-chart"], rect)
    # A blank canvas area has none: the check can fail.
    first = json.loads(charts[0]["data-rect"])
    assert series_pixels(Image.new("RGB", img.size, "white"), first) == 0


def test_with_a_base_run_the_page_shows_diffs_verdicts(traced, mariadb):
    head = trace(traced["base"] / "head", mariadb, ping=200)
    page = traced["base"] / "diff.html"
    r = run_scalp("report", head, "--base", traced["run"], "--output", page)
    assert r.returncode == 0, r.stderr
    d = run_scalp("diff", traced["run"], head, "--format", "json", "--all")
    assert d.returncode == 1, d.stdout  # 200 pings, a statement the base never made, fail
    diff = json.loads(d.stdout)
    out, err, requests, _ = chromium(page, "--dump-dom")
    dom = Dom(out)
    assert dom.body.get("data-errors") == "0" and console_lines(err) == [] and requests == []
    assert "diff" in dom.sections
    expected = sorted((c["metric"], c["verdict"]) for name in ("regressions", "improvements", "gone", "new_below_floor", "unchanged")
                      for c in diff[name])
    shown = sorted((r["data-metric"], r["data-verdict"]) for r in dom.diff_rows)
    assert shown == expected
    failing = [r for r in dom.diff_rows if r["data-verdict"] in ("regression", "new")]
    assert ("sql.calls", "new") in [(r["data-metric"], r["data-verdict"]) for r in failing]
    assert all(r["data-verdict"] in r["class"].split() for r in failing)
    shown = {r["data-verdict"] for r in dom.diff_rows}
    assert "same" in shown  # every key, as diff --all
    assert dom.data["diff"]["regressed"] is True


def test_the_machine_gets_its_own_timelines(traced, tmp_path):
    """The run's system tables (on by default) are charted under the services, value for value
    from the Parquet files; the same run without them has no such section."""
    data = traced["dom"].data
    assert "system" in traced["dom"].sections
    charts = {c["title"]: {s["label"]: s["values"] for s in c["series"]}
              for c in data["system"]["timelines"]}
    us = [round(t * 1e6) for t in data["t"]]
    rows = {r["interval_start"]: r for r in
            pq.read_table(traced["run"] / "system").to_pylist()}
    key = lambda t: datetime.datetime.fromtimestamp(t / 1e6, datetime.timezone.utc)
    modes = ["user", "nice", "system", "irq", "softirq", "iowait", "steal", "idle"]
    cpu = charts["CPU time by mode (% of all CPUs)"]
    memory = charts["Memory"]
    # A series that is zero all along is left out of its chart.
    at = lambda chart, label, i: chart[label][i] if label in chart else 0
    seen = 0
    for i, t in enumerate(us):
        r = rows.get(key(t))
        if r is None:
            continue
        seen += 1
        all_ns = sum(r[f"cpu_{m}_ns"] for m in modes)
        for m in modes:
            # An interval shorter than the kernel's CPU-time tick (the last one can be) has no
            # CPU time at all: no share is drawn.
            if all_ns == 0:
                assert at(cpu, m, i) in (None, 0), (m, i)
                continue
            assert at(cpu, m, i) == pytest.approx(100 * r[f"cpu_{m}_ns"] / all_ns, abs=1e-3), (m, i)
        assert at(memory, "mem_used_bytes", i) == r["mem_used_bytes"]
        assert at(charts.get("Load average", {}), "load_1m", i) == pytest.approx(r["load_1m"], abs=1e-3)
        forks = charts.get("Context switches and forks (per interval)", {})
        assert at(forks, "forks", i) == r["forks"]
    assert seen >= len(us) - 1, (seen, len(us))
    # Disks: whole disks only, per interval, as the table says.
    disks = pq.read_table(traced["run"] / "system_disk").to_pylist()
    chart = charts.get("Disks: bytes read and written (per interval)", {})
    for d in {r["device"] for r in disks if not r["partition"]}:
        want = sum(r["write_bytes"] for r in disks if r["device"] == d and not r["partition"]
                   and round(r["interval_start"].timestamp() * 1e6) in us)
        # (a chart of nothing but zeros is left out)
        assert sum(v or 0 for v in chart.get(f"{d} write_bytes", [])) == want, d
    # Without the system tables: no section, and the page still works.
    run = tmp_path / "run"
    shutil.copytree(traced["run"], run)
    for t in ("system", "system_cpu", "system_disk", "system_net"):
        shutil.rmtree(run / t, ignore_errors=True)
    page = tmp_path / "nosystem.html"
    r = run_scalp("report", run, "--output", page)
    assert r.returncode == 0, r.stderr
    out, err, requests, _ = chromium(page, "--dump-dom")
    dom = Dom(out)
    assert dom.body.get("data-errors") == "0" and console_lines(err) == [] and requests == []
    assert "system" not in dom.sections


def test_the_page_renders_within_two_seconds(traced):
    """As the page measures itself, from its script's start to its last chart."""
    size = traced["page"].stat().st_size
    render_ms = int(traced["dom"].body["data-render-ms"])
    print(f"page {size} bytes, {len(traced['dom'].data['t'])} intervals, rendered in {render_ms} ms, "
          f"Chromium load {traced['took']:.2f} s")
    assert render_ms < 2000
