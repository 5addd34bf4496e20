"""Long runs: a run rotating every minute makes one Parquet file per table per minute — rows in
time order, row groups of many intervals, zstd, statistics — holding exactly the rows one part
per interval would have held: every interval once, each exact by the workload's own clock, the
totals equal to the workload's count."""
import json

import duckdb
import pyarrow.parquet as pq

from conftest import Held, Scalp, WORKLOADS, run_json
from intervals import by_interval, check_contiguous, check_each_interval, ns

STEADY = WORKLOADS / "steady.py"
INTERVAL = 0.25
SECONDS = 175  # the run ends with its target, three minutes after it began


def test_a_three_minute_run_at_250ms_rotating_every_minute(out):
    work = Held("--sleep", 0.003, "--seconds", SECONDS, script=STEADY)
    try:
        scalp = Scalp(out, "--pid", work.pid, "--interval", "250ms", "--rotate", "1m",
                      "--duration", "4m").wait_ready()
        work.go()
        log = json.loads(work.readline())
        assert work.finish() == 0
        assert scalp.wait(timeout=120) == 0, scalp.stderr
    finally:
        work.kill()
    assert run_json(out)["end_reason"] == "targets ended"
    before, after = log["getppid_before"], log["getppid_after"]

    # Few files: one per table per minute (a fourth for the last seconds at most).
    for table in ["syscalls", "fileio", "blockio", "processes", "drops", "sql_statements", "sql_connections"]:
        parts = sorted((out / table).glob("*.parquet"))
        assert 1 <= len(parts) <= 4, (table, parts)
    syscall_parts = sorted((out / "syscalls").glob("*.parquet"))
    assert len(syscall_parts) >= 3, syscall_parts
    assert not list(out.rglob(".*")), "hidden files left"

    # Each file: time order, zstd, statistics, row groups of many intervals.
    for part in syscall_parts:
        f = pq.ParquetFile(part)
        starts = [ns(t) for t in f.read(columns=["interval_start"]).column(0).to_pylist()]
        assert starts == sorted(starts), part
        col = f.schema_arrow.get_field_index("interval_start")
        for g in range(f.metadata.num_row_groups):
            c = f.metadata.row_group(g).column(col)
            assert c.compression == "ZSTD" and c.statistics.has_min_max, part
            spread = (ns(c.statistics.max) - ns(c.statistics.min)) / (INTERVAL * 1e9)
            assert spread >= 100 or g == f.metadata.num_row_groups - 1, (part, g, spread)

    # The rows of one part per interval: every interval once, contiguous, each exact.
    sys_iv = by_interval(out, "syscalls", work.pid)
    io_iv = by_interval(out, "fileio", work.pid)
    spans = sorted(sys_iv)
    assert abs(len(spans) - (spans[-1][1] - spans[0][0]) / (INTERVAL * 1e9)) <= 2, len(spans)
    assert len(spans) >= SECONDS / INTERVAL * 0.95
    check_contiguous(spans, before, after)
    check_each_interval(sys_iv, before, after)
    # Every call of the workload, exactly; one write to /dev/null per getppid.
    assert sum(c.get("getppid", 0) for c in sys_iv.values()) == len(before)
    assert sum(c.get("write:other", 0) for c in io_iv.values()) == len(before)
    # DuckDB reads the same.
    [(n,)] = duckdb.sql(f"select sum(calls) from read_parquet('{out}/syscalls/*.parquet') "
                        f"where syscall_name = 'getppid' and process_pid = {work.pid}").fetchall()
    assert n == len(before)
