"""The output: tables that pandas, polars, DuckDB and pyarrow read as they are, schemas that
match schemas/, run metadata, and complete files on every way out."""
import json
import re
import signal

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from conftest import PYTHON, WORKLOADS, Held, Scalp, read_table, run_json, run_scalp, schema_doc

TABLES = ["syscalls", "fileio", "blockio", "processes", "drops", "system", "system_cpu", "system_disk", "system_net"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One run of a command with children, sealed into several parts (a period every 300 ms)."""
    out = tmp_path_factory.mktemp("output") / "run"
    r = run_scalp("run", "--output", out, "--interval", "100ms", "--rotate", "300ms", "--",
                  "sh", "-c", f"{PYTHON} {WORKLOADS / 'sysc.py'} --getppid 20000 --fork-getppid 100; "
                  "sleep 0.5; ls / > /dev/null; sleep 0.5")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("table", TABLES)
def test_files_match_schemas_exactly(finished_run, table):
    doc = schema_doc(table)
    parts = sorted((finished_run / table).glob("*.parquet"))
    assert parts, f"no parts in {table}"
    for part in parts:
        schema = pq.read_schema(part)
        written = [(f.name, str(f.type), f.nullable) for f in schema]
        documented = [(c["name"], c["type"], c["nullable"]) for c in doc["columns"]]
        assert written == documented, part


def test_parts_rotate_and_sort(finished_run):
    parts = sorted(p.name for p in (finished_run / "syscalls").glob("*.parquet"))
    assert len(parts) >= 3
    # Named after the period that wrote them: in order; a period without rows makes no file.
    assert all(re.fullmatch(r"part-\d{8}\.parquet", p) for p in parts), parts
    periods = [int(p[5:13]) for p in parts]
    assert periods == sorted(set(periods)) and periods[0] == 1
    # Each part holds the rows of its period's intervals, in time order; no interval twice.
    spans = []
    for part in parts:
        t = pq.read_table(finished_run / "syscalls" / part)
        starts = t.column("interval_start").to_pylist()
        assert starts == sorted(starts), part
        spans.append((min(starts), max(starts)))
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), spans
    # The log is gone, nothing hidden stays.
    assert not list(finished_run.rglob(".*"))


def test_the_deprecated_flush_every_still_writes_a_part_per_flush(out):
    r = run_scalp("run", "--output", out, "--interval", "100ms", "--flush-every", "100ms", "--",
                  "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do ls / > /dev/null; sleep 0.1; done")
    assert r.returncode == 0, r.stderr
    parts = sorted(p.name for p in (out / "syscalls").glob("*.parquet"))
    assert len(parts) >= 4
    assert parts == [f"part-{i:08d}.parquet" for i in range(1, len(parts) + 1)]
    assert not list(out.rglob(".*"))


def test_pandas_polars_duckdb_and_pyarrow_agree(finished_run):
    d = finished_run / "syscalls"
    by_pandas = pd.read_parquet(d).groupby("syscall_name")["calls"].sum().to_dict()
    by_polars = dict(pl.scan_parquet(str(d / "*.parquet")).group_by("syscall_name")
                     .agg(pl.col("calls").sum()).collect().iter_rows())
    by_duckdb = dict(duckdb.sql(f"select syscall_name, sum(calls) from read_parquet('{d}/*.parquet') "
                                "group by 1").fetchall())
    by_arrow = {}
    for r in pq.read_table(d).to_pylist():
        by_arrow[r["syscall_name"]] = by_arrow.get(r["syscall_name"], 0) + r["calls"]
    assert by_pandas == by_polars == by_duckdb == by_arrow
    # The shell asks for its parent once too (for $PPID).
    assert by_pandas["getppid"] == 20000 + 100 + 1
    # Timestamps come back as UTC datetimes.
    df = pd.read_parquet(d)
    assert str(df["interval_start"].dt.tz) == "UTC"


def test_every_traced_process_is_listed_once(finished_run):
    procs = read_table(finished_run, "processes").to_pylist()
    pids = [p["process_pid"] for p in procs]
    assert len(pids) == len(set(pids))
    rows = read_table(finished_run, "syscalls").to_pylist()
    assert {r["process_pid"] for r in rows} <= set(pids)
    names = {p["process_name"] for p in procs}
    assert {"sh", "ls", "sleep"} <= names
    assert all(p["process_end_time"] is not None for p in procs)


def test_run_metadata_is_in_run_json_and_every_file(finished_run):
    meta = run_json(finished_run)
    for key in ["tool_version", "host", "kernel_release", "boot_id", "run_start", "run_end",
                "command_line", "targets", "command", "arch", "schema_version"]:
        assert meta[key] not in (None, ""), key
    assert meta["end_reason"] == "command exited"
    for table in TABLES:
        for part in (finished_run / table).glob("*.parquet"):
            kv = pq.read_metadata(part).metadata
            assert kv[b"scalp.table"].decode() == table
            assert kv[b"scalp.host"].decode() == meta["host"]
            assert kv[b"scalp.boot_id"].decode() == meta["boot_id"]
            assert json.loads(kv[b"scalp.run"])["run_start"] == meta["run_start"]
            # Fleet names: the run id (start time and boot id) and the period's start.
            assert kv[b"scalp.run_id"].decode().endswith(meta["boot_id"].replace("-", ""))
            assert kv[b"scalp.period_start"].decode() >= meta["run_start"]
    last = sorted((finished_run / "syscalls").glob("*.parquet"))[-1]
    assert pq.read_metadata(last).metadata[b"scalp.run_end"].decode() == meta["run_end"]


def test_files_are_private(finished_run):
    assert finished_run.stat().st_mode & 0o777 == 0o700
    for p in finished_run.rglob("*"):
        assert p.stat().st_mode & 0o777 == (0o700 if p.is_dir() else 0o600), p


def check_complete(out):
    for table in TABLES:
        parts = list((out / table).glob("*.parquet"))
        assert parts, table
        for part in parts:
            pq.read_table(part)
    assert not list(out.rglob("*.inprogress"))


@pytest.mark.parametrize("sig,name", [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_a_signal_mid_run_leaves_complete_files(out, sig, name):
    work = Held("--getppid", 1000, "--hold-after")
    scalp = Scalp(out, "--pid", work.pid, "--interval", "100ms").wait_ready()
    work.go()
    assert work.readline().startswith("done")
    assert scalp.stop(sig) == 0, scalp.stderr
    work.finish()
    check_complete(out)
    meta = run_json(out)
    assert meta["end_reason"] == f"signal {name}"
    assert meta["run_end"]
    rows = read_table(out, "syscalls").to_pylist()
    assert sum(r["calls"] for r in rows if r["syscall_name"] == "getppid") == 1000
    [p] = read_table(out, "processes").to_pylist()
    assert p["process_end_time"] is None


def test_duration_ends_the_run_with_complete_files(out):
    work = Held("--getppid", 10)
    try:
        r = run_scalp("run", "--output", out, "--pid", work.pid, "--duration", "1500ms", "--interval", "500ms")
    finally:
        work.kill()
    assert r.returncode == 0, r.stderr
    check_complete(out)
    meta = run_json(out)
    assert meta["end_reason"] == "duration"


def test_the_default_output_directory_is_named_after_host_and_time(tmp_path):
    r = subprocess_in(tmp_path, "run", "--duration", "300ms", "--", "true")
    assert r.returncode == 0, r.stderr
    [d] = [p for p in tmp_path.iterdir() if p.name.startswith("scalp-")]
    host = run_json(d)["host"]
    assert d.name.startswith(f"scalp-{host}-") and d.name.endswith("Z")


def subprocess_in(cwd, *args):
    import subprocess
    from conftest import SCALP
    return subprocess.run([SCALP, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
