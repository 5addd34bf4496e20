"""examples/analysis.ipynb, executed (nbclient, this interpreter's ipykernel) on runs the tests
make here by tracing real workloads: its numbers must equal the ones this file computes on its
own from the Parquet files, its percentiles those of `scalp-bpf summary`, and the run must show
the work the workloads are known to have done."""
import json
import os
import pathlib
import shlex
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import PYTHON, ROOT, WORKLOADS, rows, run_json, run_scalp

NOTEBOOK = ROOT / "examples" / "analysis.ipynb"
BLOCK = 4096
SELECT_FP = "SELECT id, v FROM scalp_items WHERE id = ? AND v <> ?"
INSERT_FP = "INSERT INTO scalp_items(id, v) VALUES (?)"
UPDATE_FP = "UPDATE scalp_items SET v = ? WHERE id = ?"
QUANTILES = {"p50": 0.50, "p97": 0.97, "p99": 0.99}


# -- running the notebook -------------------------------------------------------------------------

def execute(run, tmp_path, monkeypatch):
    """Runs the notebook on `run` in a kernel of this interpreter; returns (the executed notebook,
    its results JSON, its figures folder). Nothing is written next to the notebook."""
    work = tmp_path / "notebook"
    (work / "kernels" / "scalp-python").mkdir(parents=True)
    # A kernel spec of our own, so the kernel is this venv's Python whatever else is installed.
    (work / "kernels" / "scalp-python" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "scalp-bpf tests", "language": "python"}))
    results, figures = work / "results.json", work / "figures"
    monkeypatch.setenv("JUPYTER_PATH", str(work))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(work / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(work / "ipython"))
    monkeypatch.setenv("SCALP_RUN", str(run))
    monkeypatch.setenv("SCALP_NOTEBOOK_RESULTS", str(results))
    monkeypatch.setenv("SCALP_NOTEBOOK_FIGURES", str(figures))
    before = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name="scalp-python", timeout=300,
                            resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, work / "executed.ipynb")  # for a look after a failure
    assert NOTEBOOK.read_bytes() == before
    return nb, json.loads(results.read_text()), figures


def test_the_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


# -- computing the same numbers independently -----------------------------------------------------

def percentile(hist, q):
    """The README's rule: rank q*n, first bucket whose running count reaches it, linear inside it
    between 2^(b-1) and 2^b (bucket 0 is [0, 1), the open last bucket [2^38, 2^39))."""
    n = sum(hist)
    if n == 0:
        return None
    rank, seen = q * n, 0
    for b, c in enumerate(hist):
        if c and seen + c >= rank:
            lo = 0 if b == 0 else 1 << (b - 1)
            hi = 1 << b if b < len(hist) - 1 else 2 * lo
            return lo + (hi - lo) * (rank - seen) / c
        seen += c
    raise AssertionError("unreachable")


def test_percentile_of_known_histograms():
    h = [0] * 40
    h[11] = 100  # [1024, 2048)
    assert percentile(h, 0.5) == 1536 and percentile(h, 1.0) == 2048
    h = [0] * 40
    h[1], h[10] = 50, 50  # [1, 2) and [512, 1024)
    assert percentile(h, 0.5) == 2 and percentile(h, 0.99) == 512 + 512 * 49 / 50
    h = [0] * 40
    h[0], h[39] = 1, 1
    assert percentile(h, 0.5) == 1 and percentile(h, 1.0) == 2 ** 39
    assert percentile([0] * 40, 0.5) is None


def test_the_notebooks_percentiles_follow_the_rule_on_edge_cases():
    # The notebook's own quantile(), on the histograms of the Rust unit tests and the edges:
    # a rank that ends exactly at a bucket followed by empty ones, bucket 0, the open last bucket.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    [cell] = [c.source for c in nb.cells if c.cell_type == "code" and "def quantile(" in c.source]
    space = {}
    exec(cell, space)
    cases = []
    for buckets in [{11: 100}, {1: 50, 10: 50}, {0: 1, 39: 1}, {0: 3}, {39: 7}, {5: 1, 6: 1, 20: 2},
                    {b: b + 1 for b in range(40)}]:
        h = [0] * 40
        for b, c in buckets.items():
            h[b] = c
        cases.append(h)
    for h in cases:
        for q in [0.01, 0.25, 0.5, 0.75, 0.97, 0.99, 1.0]:
            assert space["quantile"](h, q) == pytest.approx(percentile(h, q), rel=1e-12), (h, q)
    assert space["quantile"]([0] * 40, 0.5) is None


def micros(ts):
    """A timezone-aware datetime as µs since the epoch, exactly (no float)."""
    import datetime
    d = ts - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def expected_syscalls(out):
    """{(pid, start µs): (calls, last name, peak calls/s over its intervals)} from the Parquet."""
    per = {}
    for r in rows(out, "syscalls"):
        who = (r["process_pid"], r["process_start_time"] and micros(r["process_start_time"]))
        p = per.setdefault(who, {"calls": 0, "last": None, "intervals": {}})
        p["calls"] += r["calls"]
        iv = (micros(r["interval_start"]), micros(r["interval_end"]))
        p["intervals"][iv] = p["intervals"].get(iv, 0) + r["calls"]
        if p["last"] is None or iv[1] >= p["last"][0]:
            p["last"] = (iv[1], r["process_name"])
    return {who: (p["calls"], p["last"][1],
                  max(c / ((e - s) / 1e6) for (s, e), c in p["intervals"].items() if e > s))
            for who, p in per.items()}


def sums(records, keys, counters):
    t = {}
    for r in records:
        k = tuple(r[x] for x in keys)
        t[k] = [a + r[c] for a, c in zip(t.get(k, [0] * len(counters)), counters)]
    return {k: tuple(v) for k, v in t.items()}


def expected_sql(out):
    """{(system, fingerprint, status): (calls, errors, merged histogram)}."""
    t = {}
    for r in rows(out, "sql_statements"):
        k = (r["db_system_name"], r["db_query_text"], r["db_response_status_code"])
        calls, errors, hist = t.get(k, (0, 0, [0] * 40))
        assert len(r["duration_histogram"]) == 40
        t[k] = (calls + r["calls"], errors + r["errors"], [a + b for a, b in zip(hist, r["duration_histogram"])])
    return t


def bytes_per_interval(out, table):
    return sums([{**r, "s": micros(r["interval_start"]), "e": micros(r["interval_end"])}
                 for r in rows(out, table)], ["s", "e"], ["bytes"])


def check_syscalls(got, out):
    want = expected_syscalls(out)
    assert {(p["process_pid"], p["process_start_time_us"]): (p["calls"], p["process_name"])
            for p in got} == {who: (calls, name) for who, (calls, name, _) in want.items()}
    for p in got:
        assert p["peak_calls_per_second"] == pytest.approx(
            want[(p["process_pid"], p["process_start_time_us"])][2], rel=1e-9)
    # Sorted busiest first.
    assert [p["calls"] for p in got] == sorted((p["calls"] for p in got), reverse=True)


IO = {"fileio": (["file_kind", "op"], ["calls", "errors", "bytes"]),
      "blockio": (["device", "op", "attribution"], ["requests", "bytes", "errors"])}


def check_io(got, out, table):
    """The notebook's totals of an I/O table, per breakdown and per interval, are the Parquet's;
    None if the run has no such table."""
    if not (out / table).exists():
        assert got is None
        return
    keys, counters = IO[table]
    records = rows(out, table)
    assert {c: got[c] for c in counters} == {c: sum(r[c] for r in records) for c in counters}
    assert {tuple(x[k] for k in keys): tuple(x[c] for c in counters) for x in got["by"]} == \
        sums(records, keys, counters)
    assert len(got["by"]) == len(sums(records, keys, counters))
    assert {(x["interval_start_us"], x["interval_end_us"]): (x["bytes"],) for x in got["bytes_per_interval"]} == \
        bytes_per_interval(out, table)


def check_figures(figures, names):
    for name in names:
        png = (figures / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000, name


# -- the tests ------------------------------------------------------------------------------------

def test_notebook_on_a_run_of_sql_file_and_block_io(tmp_path, postgres, monkeypatch):
    out = tmp_path / "run"
    direct = tmp_path / "direct.dat"
    with open(direct, "wb") as f:  # O_DIRECT overwrites blocks already on disk
        f.write(b"\0" * 64 * BLOCK)
        f.flush()
        os.fsync(f.fileno())
    py = shlex.quote(PYTHON)
    script = " && ".join([
        # The shell's first syscalls are collected under its name "sh" at an interval's end
        # during this sleep, however fast the workloads after it run.
        "sleep 0.6",
        f"{py} {shlex.quote(str(WORKLOADS / 'sql.py'))} postgres --port {postgres.port} "
        "--select 300 --insert 40 --failed 12 --transactions 4",
        f"{py} {shlex.quote(str(WORKLOADS / 'fileio.py'))} kinds --path {shlex.quote(str(tmp_path / 'kinds.dat'))}",
        f"{py} {shlex.quote(str(WORKLOADS / 'fileio.py'))} direct --path {shlex.quote(str(direct))} "
        "--writes 64 --reads 32",
        # The shell becomes the last workload: one process, two names (sh, then python).
        f"exec {py} {shlex.quote(str(WORKLOADS / 'sysc.py'))} --getppid 20000",
    ])
    r = run_scalp("run", "--output", out, "--interval", "250ms", "--sql-port", postgres.port,
                  "--", "sh", "-c", script, timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {
        "select": 300, "insert": 40, "failed": 12, "update": 12, "transactions": 4}
    assert run_json(out)["drops"] == []

    nb, got, figures = execute(out, tmp_path, monkeypatch)
    check_figures(figures, ["syscalls_per_second", "sql_latency_percentiles", "io_bytes_over_time"])
    assert got["drops"] == [] and got["meta"]["tool"] == "scalp-bpf"

    # System calls: per process, exactly the Parquet's: the shell, its sleep and its three Pythons;
    # the shell under the name it had last.
    check_syscalls(got["syscalls"], out)
    assert len(got["syscalls"]) == 5
    [shell] = [p["process_pid"] for p in rows(out, "processes") if p["process_traced_reason"] == "command"]
    assert {r["process_name"] for r in rows(out, "syscalls", shell)} == {"sh", "python"}
    assert next(p for p in got["syscalls"] if p["process_pid"] == shell)["process_name"] == "python"
    getppid = sums(rows(out, "syscalls", shell), ["syscall_name"], ["calls"])
    assert getppid[("getppid",)] == (20000 + 1,)  # and the shell's own, for $PPID

    # SQL: per fingerprint, calls, errors and merged histogram exactly the Parquet's, percentiles
    # recomputed here from those histograms.
    want = expected_sql(out)
    sql = {(s["db_system_name"], s["db_query_text"], s["db_response_status_code"]): s for s in got["sql"]}
    assert {k: (s["calls"], s["errors"], s["histogram"]) for k, s in sql.items()} == want
    for k, s in sql.items():
        for name, q in QUANTILES.items():
            assert s[f"{name}_ns"] == pytest.approx(percentile(want[k][2], q), rel=1e-12), (k, name)
        assert s["calls"] == sum(s["histogram"])  # every statement is timed
        assert s["p50_ns"] <= s["p97_ns"] <= s["p99_ns"]
    # ...which is what the workload sent.
    assert sql[("postgresql", SELECT_FP, None)]["calls"] == 300
    assert sql[("postgresql", INSERT_FP, None)]["calls"] == 40
    assert sql[("postgresql", UPDATE_FP, None)]["calls"] == 12
    assert sum(s["calls"] for k, s in sql.items() if k[2] == "42P01") == 12
    assert sum(s["errors"] for s in sql.values()) == 12
    # ...and the percentiles are those of `scalp-bpf summary` (one group: the traced command).
    r = run_scalp("summary", out, "--format", "json", "--top", "1000")
    assert r.returncode == 0, r.stderr
    [table] = [t for t in json.loads(r.stdout)["tables"] if t["table"] == "sql_statements"]
    [group] = table["groups"]
    summary = {(x["db_system_name"], x["db_query_text"], x["db_response_status_code"] or None): x
               for x in group["rows"]}
    assert summary.keys() == sql.keys()
    for k, s in sql.items():
        assert summary[k]["calls"] == s["calls"]
        for name in QUANTILES:
            assert s[f"{name}_ns"] == pytest.approx(summary[k][f"{name}_ns"], rel=1e-12), (k, name)

    # File and block I/O: totals, per breakdown and per interval, exactly the Parquet's...
    check_io(got["fileio"], out, "fileio")
    check_io(got["blockio"], out, "blockio")
    # ...where the workloads' I/O is: the `kinds` pipe and socket writes, psycopg's traffic,
    by = {(x["file_kind"], x["op"]): x["bytes"] for x in got["fileio"]["by"]}
    assert by[("pipe", "write")] >= 4000 and by[("socket", "write")] >= 3000
    assert by[("socket", "send")] > 0 and by[("socket", "recv")] > 0
    # ...and the O_DIRECT blocks, exactly.
    blockio = rows(out, "blockio")
    [writer] = [p["process_pid"] for p in rows(out, "processes") if " direct --path " in p["process_command_line"]]
    assert sums([r for r in blockio if r["process_pid"] == writer and not r["meta"]],
                ["op", "attribution"], ["requests", "bytes"]) == {
        ("write", "direct"): (64, 64 * BLOCK), ("read", "direct"): (32, 32 * BLOCK)}
    assert got["blockio"]["bytes"] >= 96 * BLOCK


def test_notebook_on_a_run_with_absent_and_empty_tables(tmp_path, monkeypatch):
    # Without the fileio tracer its table is absent; with the sql tracer and no SQL traffic,
    # sql_statements is there but empty, and so is drops.
    out = tmp_path / "run"
    r = run_scalp("run", "--output", out, "--tracers", "syscalls,blockio,sql", "--interval", "100ms",
                  "--", PYTHON, WORKLOADS / "sysc.py", "--getppid", 200000, "--fail-rmdir", 500)
    assert r.returncode == 0, r.stderr
    assert not (out / "fileio").exists()
    assert (out / "sql_statements").is_dir() and rows(out, "sql_statements") == []
    assert (out / "drops").is_dir() and rows(out, "drops") == []
    nb, got, figures = execute(out, tmp_path, monkeypatch)
    assert got["fileio"] is None and got["sql"] == [] and got["drops"] == []
    check_io(got["blockio"], out, "blockio")  # empty, unless Python's start had to read from disk
    check_syscalls(got["syscalls"], out)
    [p] = got["syscalls"]
    calls = sums(rows(out, "syscalls"), ["syscall_name"], ["calls"])
    assert calls[("getppid",)] == (200000,) and calls[("rmdir",)] == (500,)
    assert p["calls"] == sum(c for (c,) in calls.values())
    check_figures(figures, ["syscalls_per_second"])
    assert not (figures / "sql_latency_percentiles.png").exists()
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "no SQL statements recorded" in printed and "no fileio rows in this run (tracer off)" in printed


def test_notebook_says_what_is_wrong_without_a_run(tmp_path, monkeypatch):
    with pytest.raises(CellExecutionError, match="not a scalp-bpf run directory"):
        execute(tmp_path / "nowhere", tmp_path, monkeypatch)
