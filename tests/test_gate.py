"""The CI gate on a realistic mixed workload (tests/gate.py): three uWSGI services on the tests'
MariaDB and PostgreSQL, restarted before each run as a CI job deploys, a time-bound load driver
whose per-service mix varies by ±20 % from run to run, 23 unchanged runs and 20 runs with three
regressions injected through the app's knobs (one more SELECT per request on one route of ten,
10 % more fsyncs in one service, a new query on 5 % of one service's requests, each in its own
service).

- 22 pairs of consecutive unchanged runs: at most one `diff` exits 1.
- 20 unchanged runs against the three runs before them: none does.
- Each regressed run against one unchanged run, and against three: exit 1, naming the service,
  the fingerprint and the route (where the tables carry one), in at least 19 of 20.

The runs are made once for the module (43 runs of 8 s, about 10 minutes); the tests judge them."""
import json
import subprocess

import pytest

import gate
from conftest import SCALP, rows, run_json

UNCHANGED, REGRESSED = 23, 20


@pytest.fixture(scope="module")
def stack(mariadb, postgres):
    s = gate.Stack(mariadb, postgres)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def judged(stack, tmp_path_factory):
    where = tmp_path_factory.mktemp("gate")
    return where, gate.protocol(stack, where, UNCHANGED, REGRESSED)


def failing(rows_):
    return [(r["head"], r["flagged"]) for r in rows_ if r["exit"] == 1]


def test_unchanged_pairs_almost_never_fail(judged):
    _, result = judged
    assert len(result["pairs"]) == UNCHANGED - 1
    assert len(failing(result["pairs"])) <= 1, failing(result["pairs"])


def test_unchanged_runs_against_three_base_runs_never_fail(judged):
    _, result = judged
    assert len(result["three_bases"]) == UNCHANGED - 3
    assert failing(result["three_bases"]) == []


@pytest.mark.parametrize("bases", ["regressed_one_base", "regressed_three_bases"])
@pytest.mark.parametrize("regression", sorted(gate.EXPECTED))
def test_each_injected_regression_is_flagged_and_named(judged, bases, regression):
    _, result = judged
    rows_ = result[bases]
    assert len(rows_) == REGRESSED
    caught = [r for r in rows_ if r["exit"] == 1 and not r["missing"][regression]]
    missed = [(r["head"], r["missing"][regression]) for r in rows_ if r not in caught]
    assert len(caught) >= REGRESSED - 1, missed


def test_regressed_runs_flag_nothing_else(judged):
    """Every finding in a regressed run is one of the injected regressions (or the route and
    syscall counts that move with them), never a service left unchanged."""
    _, result = judged
    allowed = {("catalog", "sql.calls"), ("catalog", "http.sql_per_request"), ("orders", "sql.calls"),
               ("files", "fileio.syncs")}
    strays = []
    for r in result["regressed_three_bases"]:
        for f in r["flagged"]:
            metric, group = f.split(" ")[:2]
            if (group, metric) not in allowed:
                strays.append((r["head"], f))
    assert len(strays) <= 1, strays


def group_requests(out):
    """Server-side requests per service, recomputed from the Parquet files: each uWSGI master
    (traced as `target:NAME`; the services are restarted before every run) and its workers are
    the service."""
    procs = rows(out, "processes")
    parent = {p["process_pid"]: p["process_parent_pid"] for p in procs}
    masters = {p["process_pid"]: p["process_traced_reason"].removeprefix("target:") for p in procs
               if p["process_traced_reason"].startswith("target:")}
    assert set(masters.values()) == set(gate.SERVICES), masters
    totals = {}
    for r in rows(out, "http_requests"):
        if r["direction"] != "server":
            continue
        pid = r["process_pid"]
        name = masters.get(pid) or masters.get(parent.get(pid))
        totals[name] = totals.get(name, 0) + r["calls"]
    return totals


def test_each_service_is_counted_per_its_own_requests(judged):
    where, _ = judged
    base, head = where / "unchanged-00", where / "unchanged-01"
    code, report = gate.diff([base], head)
    groups = {g["group"]: g for g in report["groups"]}
    assert {g["per"] for g in groups.values()} == {"request"}, groups
    assert set(groups) == set(gate.SERVICES)
    for name, n in group_requests(base).items():
        assert groups[name]["base_units"] == n, name
    for name, n in group_requests(head).items():
        assert groups[name]["head_units"] == n, name
    # The regression report says what each finding is per request, with its interval.
    code, report = gate.diff([base], where / "regressed-00")
    assert code == 1
    x = next(x for x in report["regressions"] if x["metric"] == "http.sql_per_request")
    assert x["per"] == "request" and x["base_normalized"] == pytest.approx(2.0)
    assert x["head_normalized"] == pytest.approx(3.0)
    assert x["change_low"] > 0 and "±" in x["change_text"]


def test_a_directory_of_base_runs_is_the_same_as_naming_them_and_decisions_repeat(judged, tmp_path):
    where, _ = judged
    bases = tmp_path / "bases"
    bases.mkdir()
    for i in range(3):
        (bases / f"b{i}").symlink_to(where / f"unchanged-{i:02}")
    head = where / "regressed-03"
    one = subprocess.run([SCALP, "diff", "--format", "json", *[where / f"unchanged-{i:02}" for i in range(3)],
                          "--", head], capture_output=True, text=True)
    two = subprocess.run([SCALP, "diff", "--format", "json", bases, "--", head], capture_output=True, text=True)
    again = subprocess.run([SCALP, "diff", bases, head, "--format", "json"], capture_output=True, text=True)
    assert one.returncode == two.returncode == again.returncode == 1, (one.stderr, two.stderr)
    strip = lambda doc: {k: v for k, v in json.loads(doc).items() if k not in ("base", "bases")}
    assert strip(one.stdout) == strip(two.stdout) == strip(again.stdout)
    md = subprocess.run([SCALP, "diff", bases, head], capture_output=True, text=True)
    assert md.returncode == 1
    assert "run-to-run noise from 3 base runs" in md.stdout
    assert "GET /products/{id}: SQL statements" in md.stdout


def test_units_per_group_for_services_without_requests(judged, tmp_path):
    where, _ = judged
    import shutil
    a = shutil.copytree(where / "unchanged-04", tmp_path / "a")
    b = shutil.copytree(where / "unchanged-05", tmp_path / "b")
    for run, n in ((a, 1000), (b, 2000)):
        r = subprocess.run([SCALP, "units", run, str(n), "--group", "files"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert run_json(b)["units_by_group"] == {"files": 2000}
    # Requests come first; --per unit uses the group's own units where it has them, and
    # refuses runs where a group has none.
    code, report = gate.diff([a], b)
    assert {g["group"]: g["per"] for g in report["groups"]}["files"] == "request"
    r = subprocess.run([SCALP, "diff", a, b, "--per", "unit", "--format", "json"], capture_output=True, text=True)
    assert r.returncode == 9 and "records no units of work" in r.stderr, r.stderr
    for run in (a, b):
        subprocess.run([SCALP, "units", run, "500"], check=True)
    r = subprocess.run([SCALP, "diff", a, b, "--per", "unit", "--format", "json"], capture_output=True, text=True)
    groups = {g["group"]: g for g in json.loads(r.stdout)["groups"]}
    assert groups["files"]["base_units"] == 1000 and groups["files"]["head_units"] == 2000
    assert groups["catalog"]["base_units"] == 500 and groups["catalog"]["per"] == "unit"
