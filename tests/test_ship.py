"""Fleets: runs of several hosts shipped to a real S3-compatible server (s3s-fs, started here) in
the Hive layout, read back from the server by pyarrow and polars and from a local copy by DuckDB
and `scalp-bpf summary`, equal to the local runs and to the workloads' own counts; and uploads
that fail while the server is down: nothing lost locally, every file shipped exactly once when it
is back (by the run itself, or by `scalp-bpf ship`)."""
import hashlib
import json
import pathlib
import re
import subprocess
import time

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import PYTHON, SCALP, WORKLOADS, run_json
from servers import S3, pick_port

STEADY = WORKLOADS / "steady.py"
BUCKET = "fleet"
KEY = re.compile(r"table=(\w+)/date=(\d{4}-\d\d-\d\d)/host=([\w.-]+)/([\w.]+Z-[0-9a-f]+)-(\d{8})\.parquet")


@pytest.fixture(scope="module")
def s3():
    server = S3(port=pick_port(8014)).start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


def scalp(*args, env=None, timeout=120):
    return subprocess.run([SCALP, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def traced_run(out, host, *extra, seconds=2.5, env=None):
    """A run of the steady workload as `-- CMD` (traced from its first syscall); returns its
    getppid count by its own log."""
    log = out.parent / f"{out.name}-work.json"
    r = scalp("run", "--output", out, "--host", host, "--interval", "200ms", "--rotate", "1s", *extra,
              "--", PYTHON, STEADY, "--seconds", seconds, "--log", log, env=env)
    assert r.returncode == 0, r.stderr
    return len(json.loads(log.read_text())["getppid_before"]), r.stderr


def local_parts(out):
    return {p.relative_to(out).as_posix(): p for p in sorted(out.glob("*/part-*.parquet"))}


def local_tables(out):
    return {d.name: pq.read_table(d) for d in sorted(out.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def getppid_of(table):
    return sum(r["calls"] for r in table.to_pylist() if r["syscall_name"] == "getppid")


def test_three_hosts_shipped_then_read_back_by_pyarrow_polars_duckdb_and_summary(s3, tmp_path):
    url = f"s3://{BUCKET}/scalp"
    runs = {}
    for i, host in enumerate(["ctl-1", "ctl-2", "ctl-3"]):
        out = tmp_path / host
        if i < 2:
            count, err = traced_run(out, host, "--ship", url, env=s3.env())
            assert re.search(rf"shipped \d+ files to {re.escape(url)}", err), err
        else:
            count, _ = traced_run(out, host)
            r = scalp("ship", out, url, env=s3.env())
            assert r.returncode == 0, r.stderr
            assert re.search(r"\d+ files uploaded, 0 there already", r.stderr), r.stderr
        runs[host] = (out, count)

    objects = s3.objects(f"{BUCKET}/scalp")
    # One object per local part, named after it: table, UTC day, host, run id and period.
    for host, (out, _) in runs.items():
        meta = run_json(out)
        parts = local_parts(out)
        assert len(parts) >= 5 * 2, parts  # every table, and --rotate 1s made several periods
        mine = {k: v for k, v in objects.items() if f"/host={host}/" in k}
        assert len(mine) == len(parts), (sorted(mine), sorted(parts))
        for key, size in mine.items():
            table, date, h, run, seq = KEY.fullmatch(key).groups()
            assert h == host and date == meta["run_start"][:10]
            assert run.endswith(meta["boot_id"].replace("-", ""))
            local = out / table / f"part-{seq}.parquet"
            assert local.stat().st_size == size, key

    # pyarrow, straight from the server (a listed file set: s3s-fs answers HEAD on a prefix
    # with an error, so the dataset is not opened from a bare prefix).
    fs = s3.filesystem()

    def remote(table):
        files = [f"{BUCKET}/scalp/{k}" for k in sorted(objects) if k.startswith(f"table={table}/")]
        return ds.dataset(files, filesystem=fs, format="parquet", partitioning="hive",
                          partition_base_dir=f"{BUCKET}/scalp").to_table()

    for table in local_tables(runs["ctl-1"][0]):
        t_remote = remote(table)
        for host, (out, count) in runs.items():
            t = pq.read_table(out / table)
            got = t_remote.filter(ds.field("host") == host)
            assert got.num_rows == t.num_rows, (host, table)
            if "calls" in t.column_names:
                assert sum(got.column("calls").to_pylist()) == sum(t.column("calls").to_pylist()), (host, table)
            if table == "syscalls":
                assert getppid_of(got) == getppid_of(t) == count

    # polars, from the server through pyarrow's S3 client (polars' own client asks for a suffix
    # range longer than these small files, which s3s-fs 0.14.1 answers with an error 500).
    files = [f"{BUCKET}/scalp/{k}" for k in sorted(objects) if k.startswith("table=syscalls/")]
    syscalls = ds.dataset(files, filesystem=fs, format="parquet", partitioning="hive",
                          partition_base_dir=f"{BUCKET}/scalp")
    by_polars = (pl.scan_pyarrow_dataset(syscalls)
                 .filter(pl.col("syscall_name") == "getppid")
                 .group_by("host").agg(pl.col("calls").sum()).collect())
    assert dict(by_polars.iter_rows()) == {h: c for h, (_, c) in runs.items()}

    # DuckDB, on a local copy of the bucket (the documented fleet query).
    copy = tmp_path / "copy"
    for key in objects:
        dest = copy / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(f"{BUCKET}/scalp/{key}") as f:
            dest.write_bytes(f.read())
    rows = duckdb.sql(f"""
        select host, count(*) as n, sum(calls) filter (where syscall_name = 'getppid') as getppid
        from read_parquet('{copy}/table=syscalls/**/*.parquet', hive_partitioning = true)
        group by host order by host""").fetchall()
    assert rows == [(h, pq.read_table(out / "syscalls").num_rows, c) for h, (out, c) in sorted(runs.items())]

    # summary and diff on the Hive copy and on a directory of the three runs: grouped per host.
    both = tmp_path / "runs"
    both.mkdir()
    for host, (out, _) in runs.items():
        (both / host).symlink_to(out)
    for root in (copy, both):
        r = scalp("summary", root, "--format", "json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        groups = {g["group"]: g for t in doc["tables"] if t["table"] == "syscalls" for g in t["groups"]}
        for host, (_, count) in runs.items():
            [g] = [g for name, g in groups.items() if name.startswith(f"{host}/")]
            getppid = [row for row in g["rows"] if row["syscall_name"] == "getppid"]
            assert getppid and getppid[0]["calls"] == count, (root, host, g)
        assert sorted(doc["hosts"]) == sorted(runs)
    r = scalp("diff", copy, both, "--format", "json", "--per", "run")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["regressions"] == []


def test_a_server_down_mid_run_loses_nothing_and_every_file_is_shipped_once(s3, tmp_path):
    url = f"s3://{BUCKET}/outage"
    out = tmp_path / "run"
    log = tmp_path / "work.json"
    argv = [SCALP, "run", "--output", out, "--host", "ctl-down", "--interval", "200ms", "--rotate", "1s",
            "--ship", url, "--", PYTHON, STEADY, "--seconds", 9, "--log", log]
    run = subprocess.Popen(list(map(str, argv)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=s3.env())
    try:
        deadline = time.monotonic() + 30
        while not s3.objects(f"{BUCKET}/outage") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert s3.objects(f"{BUCKET}/outage"), "nothing shipped while the server was up"
        s3.stop()
        time.sleep(3)  # three periods sealed while uploads fail
        sealed_while_down = len(local_parts(out))
        s3.start(fresh=False)
        _, err = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            run.kill()
        if s3.proc is None:
            s3.start(fresh=False)
    assert run.returncode == 0, err
    # The shipper retried once the server was back: everything is there by the end of the run.
    parts = local_parts(out)
    assert len(parts) > sealed_while_down
    assert re.search(rf"shipped {len(parts)} files to {re.escape(url)}", err), err
    check_shipped_once(s3, "outage", out, parts)
    count = len(json.loads(log.read_text())["getppid_before"])
    assert getppid_of(pq.read_table(out / "syscalls")) == count


def test_files_a_run_could_not_ship_are_shipped_by_ship_once(s3, tmp_path):
    url = f"s3://{BUCKET}/later"
    out = tmp_path / "run"
    s3.stop()
    try:
        count, err = traced_run(out, "ctl-later", "--ship", url, seconds=1.5, env=s3.env())
    finally:
        s3.start(fresh=False)
    parts = local_parts(out)
    assert f"{len(parts)} of {len(parts)} files not shipped to {url}" in err, err
    assert f"`scalp-bpf ship {out} {url}` uploads them" in err, err
    assert not s3.objects(f"{BUCKET}/later")
    r = scalp("ship", out, url, env=s3.env())
    assert r.returncode == 0, r.stderr
    assert f"{len(parts)} files uploaded, 0 there already" in r.stderr, r.stderr
    check_shipped_once(s3, "later", out, parts)
    # Again: nothing new. Without the record of what was shipped, the server itself refuses a
    # second copy (conditional create) and the same names are found there.
    r = scalp("ship", out, url, env=s3.env())
    assert f"0 files uploaded, {len(parts)} there already" in r.stderr, r.stderr
    (out / ".shipped").unlink()
    r = scalp("ship", out, url, env=s3.env())
    assert r.returncode == 0, r.stderr
    assert f"0 files uploaded, {len(parts)} there already" in r.stderr, r.stderr
    check_shipped_once(s3, "later", out, parts)
    assert getppid_of(pq.read_table(out / "syscalls")) == count


def check_shipped_once(s3, prefix, out, parts):
    """Every local part is in the bucket exactly once, byte for byte, and nothing else is."""
    objects = s3.objects(f"{BUCKET}/{prefix}")
    assert len(objects) == len(parts), (sorted(objects), sorted(parts))
    fs = s3.filesystem()
    by_name = {}
    for key in objects:
        table, _, _, _, seq = KEY.fullmatch(key).groups()
        by_name[f"{table}/part-{seq}.parquet"] = key
    assert sorted(by_name) == sorted(parts)
    for name, path in parts.items():
        with fs.open_input_stream(f"{BUCKET}/{prefix}/{by_name[name]}") as f:
            assert hashlib.sha256(f.read()).digest() == hashlib.sha256(path.read_bytes()).digest(), name
