"""`summary`, `diff` and `units` on real runs: a stand-in service doing R requests, each with K
SQL statements (PyMySQL to the tests' MariaDB) and F fsyncs, traced by the real binary."""
import itertools
import json
import math
import pathlib
import shutil
import subprocess
import tempfile

import pyarrow.parquet as pq
import pytest

from conftest import PYTHON, SCALP, WORKLOADS, read_table, run_scalp
from test_python_sites import traced as traced_sites

REQUESTS = 200
FINGERPRINT = "SELECT v FROM scalp_items WHERE id = ?"


def traced_requests(mariadb, out, statements=1, fsyncs=1, units=True, tracers=None, extra=None):
    """One traced run of the request workload; its log goes to tmpfs so fsyncs are cheap and steady."""
    log = pathlib.Path(tempfile.mkdtemp(dir="/dev/shm")) / "requests.log"
    try:
        args = ["run", "--output", out, "--sql-port", mariadb.port]
        if units:
            args += ["--units", REQUESTS]
        if tracers:
            args += ["--tracers", tracers]
        more = ["--extra", extra] if extra else []
        r = run_scalp(*args, "--", PYTHON, WORKLOADS / "requests.py", "--port", mariadb.port,
                      "--requests", REQUESTS, "--statements", statements, "--fsyncs", fsyncs, "--log", log, *more)
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(log.parent, ignore_errors=True)
    return out


def diff(base, head, *args):
    r = subprocess.run([SCALP, "diff", base, head, "--format", "json", *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


@pytest.fixture(scope="module")
def base_run(mariadb, tmp_path_factory):
    return traced_requests(mariadb, tmp_path_factory.mktemp("base") / "run")


def test_diff_names_exactly_the_extra_statements_and_fsyncs(mariadb, base_run, tmp_path):
    # Head: twice the statements per request, three times the fsyncs; its units are written after
    # the run, as a CI job that learns the count at the end would.
    head = traced_requests(mariadb, tmp_path / "head", statements=2, fsyncs=3, units=False)
    r = subprocess.run([SCALP, "units", head, str(REQUESTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((head / "run.json").read_text())["units"] == REQUESTS

    code, report = diff(base_run, head)
    assert code == 1
    assert report["per"] == "unit"
    flagged = {(x["metric"], tuple(sorted(x["key"].items()))) for x in report["regressions"]}
    assert flagged == {
        ("sql.calls", (("db_query_text", FINGERPRINT), ("db_system_name", "mariadb"))),
        ("fileio.syncs", (("op", "fsync"),)),
    }, report["regressions"]
    by_metric = {x["metric"]: x for x in report["regressions"]}
    # Counts exact; per unit within float rounding (units are spread over the intervals, and
    # their shares sum back to the total only within an ulp: 1.9999999999999998 was seen).
    per_unit = lambda v: pytest.approx(v, rel=1e-12)
    assert by_metric["sql.calls"]["base_normalized"] == per_unit(1.0)
    assert by_metric["sql.calls"]["head_normalized"] == per_unit(2.0)
    assert by_metric["sql.calls"]["head"] == 2 * REQUESTS
    assert by_metric["fileio.syncs"]["base_normalized"] == per_unit(1.0)
    assert by_metric["fileio.syncs"]["head_normalized"] == per_unit(3.0)

    # The Markdown report says the same for a review comment.
    md = subprocess.run([SCALP, "diff", base_run, head], capture_output=True, text=True)
    assert md.returncode == 1
    assert "### scalp-bpf diff: 2 regressions" in md.stdout
    assert f"| sql.calls" in md.stdout and FINGERPRINT in md.stdout

    # Swapped, the same changes are improvements: nothing fails.
    code, report = diff(head, base_run)
    assert code == 0 and report["regressions"] == []
    assert {x["metric"] for x in report["improvements"]} == {"sql.calls", "fileio.syncs"}


def test_a_new_fingerprint_fails_the_gate_whatever_the_thresholds(mariadb, base_run, tmp_path):
    # The same work plus one statement never seen before, run once in 200 requests: the kind of
    # query a patch slips in. Below the default floor for new keys (1 % of requests) it is
    # reported, not failed; with the floor at 0 it fails by itself whatever the thresholds.
    head = traced_requests(mariadb, tmp_path / "head", extra="SELECT COUNT(*) FROM scalp_items WHERE v LIKE 'x%'")
    new = ("sql.calls", "SELECT count(*) FROM scalp_items WHERE v LIKE ?", 1)
    code, report = diff(base_run, head)
    assert code == 0, report["regressions"]
    assert [(x["metric"], x["key"]["db_query_text"], x["head"]) for x in report["new_below_floor"]] == [new]
    for extra_args in [["--new-floor", "0%"],
                       ["--new-floor", "0.5%", "--threshold", "1000%", "--floor", "sql.calls=1000000"]]:
        code, report = diff(base_run, head, *extra_args)
        assert code == 1, extra_args
        assert [(x["metric"], x["key"]["db_query_text"], x["head"]) for x in report["regressions"]] == [new]
        assert report["regressions"][0]["verdict"] == "new"


def sites_run(mariadb, out, *app_args, rounds=60):
    """sql_sites.py (one thread, `rounds` rounds, one unit each) traced with Python call sites."""
    traced_sites(out, mariadb, ["--workers", 1, "--n", rounds, *app_args], ["--units", rounds])
    return out


def test_diff_names_the_call_site_of_a_grown_and_of_a_new_fingerprint(mariadb, tmp_path):
    # Base: load_item and count_item send the fingerprint once per round each. Head: count_item
    # twice, and probe_item a statement never seen before: the gate names the lines.
    app = str(WORKLOADS / "sql_sites.py")
    line = {name: n for n, text in enumerate(pathlib.Path(app).read_text().splitlines(), 1)
            for name in ["load_item", "count_item", "probe_item"] if text.endswith(f"# site {name}")}
    base = sites_run(mariadb, tmp_path / "base")
    head = sites_run(mariadb, tmp_path / "head", "--count-times", 2, "--probe")
    code, report = diff(base, head)
    assert code == 1 and report["per"] == "unit"
    sql = {x["key"]["db_query_text"]: x for x in report["regressions"] if x["metric"] == "sql.calls"}
    probe = [t for t in sql if "FROM scalp_items WHERE v = ?" in t]
    assert set(sql) == {FINGERPRINT, *probe} and len(probe) == 1, sql.keys()
    site = lambda name, base_rate, head_rate: {"function": name, "file": app, "line": line[name],
                                               "base_rate": pytest.approx(base_rate, rel=1e-9),
                                               "head_rate": pytest.approx(head_rate, rel=1e-9)}
    # Biggest growth first; the unchanged site after it.
    assert sql[FINGERPRINT]["call_sites"] == [site("count_item", 1.0, 2.0), site("load_item", 1.0, 1.0)]
    assert sql[probe[0]]["verdict"] == "new"
    assert sql[probe[0]]["call_sites"] == [site("probe_item", 0.0, 1.0)]
    # The Markdown report says where.
    md = subprocess.run([SCALP, "diff", base, head], capture_output=True, text=True)
    assert md.returncode == 1
    assert f"at {app}:{line['count_item']} in count_item" in md.stdout
    assert f"at {app}:{line['probe_item']} in probe_item" in md.stdout


def test_repeated_runs_of_an_unchanged_workload_do_not_regress(mariadb, base_run, tmp_path):
    runs = [base_run] + [traced_requests(mariadb, tmp_path / f"again{i}") for i in range(4)]
    for a, b in itertools.permutations(runs, 2):
        code, report = diff(a, b)
        assert code == 0, (a, b, report["regressions"])


def test_per_second_is_the_default_without_units(mariadb, tmp_path):
    a = traced_requests(mariadb, tmp_path / "a", units=False)
    b = traced_requests(mariadb, tmp_path / "b", units=False)
    _, report = diff(a, b)
    assert report["per"] == "second"
    assert report["base_denominator"] > 0 and report["head_denominator"] > 0
    r = subprocess.run([SCALP, "diff", a, b, "--per", "unit"], capture_output=True, text=True)
    assert r.returncode == 9
    assert "records no units of work" in r.stderr and r.stderr.count("\n") == 1


def hist_quantile(counts, q):
    """The README's percentile rule, implemented independently: linear inside a log2 bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    before = 0
    for b, c in enumerate(counts):
        if c and before + c >= rank:
            lo = 0 if b == 0 else 2 ** (b - 1)
            hi = 1 if b == 0 else (2 ** b if b < len(counts) - 1 else 2 * lo)
            return lo + (hi - lo) * min(max((rank - before) / c, 0.0), 1.0)
        before += c
    return None


def merged(rows, key_cols, hist_col):
    out = {}
    for r in rows:
        k = tuple(r[c] for c in key_cols)
        calls, hist = out.get(k, (0, None))
        h = r[hist_col]
        hist = list(h) if hist is None else [x + y for x, y in itertools.zip_longest(hist, h, fillvalue=0)]
        out[k] = (calls + r["calls"], hist)
    return out


def test_summary_equals_what_the_parquet_files_say(base_run):
    r = subprocess.run([SCALP, "summary", base_run, "--format", "json", "--top", "1000"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    tables = {t["table"]: t for t in doc["tables"]}
    checks = [("syscalls", ["syscall_name"]),
              ("sql_statements", ["db_system_name", "db_query_text", "db_response_status_code"]),
              ("fileio", ["file_kind", "op"])]
    for table, keys in checks:
        expected = merged(read_table(base_run, table).to_pylist(), keys, "duration_histogram")
        (group,) = tables[table]["groups"]  # one service: the traced command
        got = {tuple(row[k] if row[k] is not None else "" for k in keys): row for row in group["rows"]}
        expected = {tuple(x if x is not None else "" for x in k): v for k, v in expected.items()}
        assert got.keys() == expected.keys(), table
        for k, (calls, hist) in expected.items():
            assert got[k]["calls"] == calls, (table, k)
            for name, q in [("p50_ns", 0.5), ("p97_ns", 0.97), ("p99_ns", 0.99)]:
                want = hist_quantile(hist, q)
                if want is None:
                    assert got[k][name] is None
                else:
                    assert math.isclose(got[k][name], want, rel_tol=1e-9), (table, k, name)
    sql = {row["db_query_text"]: row for row in tables["sql_statements"]["groups"][0]["rows"]}
    assert sql[FINGERPRINT]["calls"] == REQUESTS


def test_summary_formats(base_run):
    for fmt, marker in [("table", "System calls"), ("markdown", "#### System calls")]:
        r = subprocess.run([SCALP, "summary", base_run, "--format", fmt], capture_output=True, text=True)
        assert r.returncode == 0 and marker in r.stdout, r.stderr
    r = subprocess.run([SCALP, "summary", base_run, "--per-process", "--format", "json"],
                       capture_output=True, text=True)
    assert r.returncode == 0
    assert all("[" in g["group"] for t in json.loads(r.stdout)["tables"] for g in t["groups"])


# Bad inputs: one clear line on stderr, a documented exit code, never a traceback.

def bad(args, code, needle):
    r = subprocess.run([SCALP, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert needle in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "panicked" not in r.stderr, r.stderr


def copy_run(run, to):
    shutil.copytree(run, to)
    return to


def test_diff_of_a_path_that_is_not_a_run(base_run, tmp_path):
    bad(["diff", tmp_path, base_run], 8, "is not a scalp-bpf run")
    bad(["diff", base_run, tmp_path / "missing"], 8, "is not a scalp-bpf run")
    bad(["summary", tmp_path], 8, "is not a scalp-bpf run")


def test_diff_of_a_truncated_parquet_file(base_run, tmp_path):
    broken = copy_run(base_run, tmp_path / "broken")
    part = sorted((broken / "syscalls").glob("*.parquet"))[0]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    bad(["diff", base_run, broken], 8, f"{part}: not a readable Parquet file")
    bad(["summary", broken], 8, f"{part}: not a readable Parquet file")


def test_diff_of_runs_with_different_tables(mariadb, base_run, tmp_path):
    only_syscalls = traced_requests(mariadb, tmp_path / "few", tracers="syscalls")
    bad(["diff", base_run, only_syscalls], 9, "the runs have different tables")


def test_diff_of_runs_of_different_schema_versions(base_run, tmp_path):
    other = copy_run(base_run, tmp_path / "v99")
    meta = json.loads((other / "run.json").read_text())
    meta["schema_version"] = 99
    (other / "run.json").write_text(json.dumps(meta))
    bad(["diff", base_run, other], 9, "different schema versions")


def test_a_run_json_that_is_not_json(base_run, tmp_path):
    other = copy_run(base_run, tmp_path / "garbled")
    (other / "run.json").write_text("{ not json")
    bad(["diff", base_run, other], 8, "not valid JSON")
    bad(["units", other, "10"], 8, "not valid JSON")


def test_units_rejects_bad_counts(base_run, tmp_path):
    bad(["units", base_run, "zero"], 2, "not a positive number of units")
    bad(["units", base_run, "-3"], 2, "not a positive number of units")
    bad(["units", tmp_path, "3"], 8, "is not a scalp-bpf run")
    bad(["diff", base_run, base_run, "--threshold-for", "sql.p98=5%"], 2, "unknown metric")
