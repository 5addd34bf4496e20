"""The CI-gate protocol, shared by tests/test_gate.py and `cargo xtask bench gate`: three services
of tests/workloads/gate_app.py under uWSGI (catalog on MariaDB, orders on PostgreSQL, files on
MariaDB + fsync'd files), driven by tests/workloads/gate_load.py whose per-service mix varies by
±20 % from run to run; runs of it traced by the real scalp-bpf, unchanged or with regressions
injected through the app's knobs, and `scalp-bpf diff` judged on them.

    python tests/gate.py --unchanged 23 --regressed 20 [--seconds 8] [--json]

(as root, with the release binary built; SCALP_BPF picks another) prints the false-alarm and
detection rates.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import servers  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCALP = os.environ.get("SCALP_BPF", str(ROOT / "target/release/scalp-bpf"))
LOAD = ROOT / "tests" / "workloads" / "gate_load.py"
SERVICES = ("catalog", "orders", "files")

# The regressions, all injected at once: each is in its own service, and a service is normalized by
# its own requests, so one does not hide or make another.
REGRESSIONS = {"extra_select": True, "new_query": 0.15, "extra_fsync": 0.1}
# What the report must name for each: (metric, group, key fields, route or None).
EXPECTED = {
    "extra_select": [
        ("sql.calls", "catalog", {"db_query_text": "SELECT name FROM gate_categories WHERE id = ?"},
         "GET /products/{id}"),
        ("http.sql_per_request", "catalog", {"http_request_method": "GET", "http_route": "/products/{id}"},
         "GET /products/{id}"),
    ],
    "new_query": [
        ("sql.calls", "orders", {"db_query_text": "SELECT count(*) FROM gate_audit WHERE order_id = ?"},
         "GET /orders/{id}"),
    ],
    "extra_fsync": [("fileio.syncs", "files", {"op": "fsync"}, None)],
}


class Stack:
    """The databases, the three services and the knobs file."""

    def __init__(self, mariadb=None, postgres=None):
        self.scratch = pathlib.Path(tempfile.mkdtemp(prefix="scalp-gate-", dir="/dev/shm"))
        self.own = []
        if mariadb is None:
            mariadb = servers.MariaDB(port=servers.pick_port(3306)).start()
            self.own.append(mariadb)
        if postgres is None:
            postgres = servers.Postgres(port=servers.pick_port(5432)).start()
            self.own.append(postgres)
        self.mariadb, self.postgres = mariadb, postgres
        self.knobs = self.scratch / "knobs.json"
        self.knobs.write_text("{}")
        files = self.scratch / "blobs"
        self.services = {}
        for i, name in enumerate(SERVICES):
            self.services[name] = servers.GateService(name, mariadb, postgres, self.knobs, files,
                                                      port=servers.pick_port(8100 + i))
        next(iter(self.services.values())).prepare()
        try:
            for s in self.services.values():
                s.start()
        except Exception:
            self.stop()
            raise

    def sql_ports(self):
        return [a for p in (self.mariadb.port, self.postgres.port) if p not in (3306, 5432)
                for a in ("--sql-port", str(p))]

    def set_knobs(self, knobs):
        tmp = self.knobs.with_suffix(".tmp")
        tmp.write_text(json.dumps(knobs))
        tmp.rename(self.knobs)

    def restart(self):
        """Fresh workers, as a CI job deploys the code it tests: new DB sessions, so PostgreSQL
        statements are prepared (Parse) again where the trace sees them."""
        errors = []

        def start(s):
            try:
                s.stop()
                s.start()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=start, args=(s,)) for s in self.services.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def run(self, out, seed, seconds=8.0, interval="250ms", knobs=None):
        """One traced run of `seconds` under load; returns the driver's report. The CI job's
        shape: deploy (restart the services), start tracing, run the load test; the load outlasts
        the trace."""
        self.set_knobs(knobs or {})
        self.restart()
        ports = [a for name, s in self.services.items() for a in (f"--{name}", str(s.port))]
        targets = [a for name in SERVICES for a in ("--pid", name)]
        scalp = subprocess.Popen([SCALP, "run", "--output", str(out), "--duration", f"{seconds}s", "--interval",
                                  interval, *targets, *self.sql_ports()], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        load = None
        try:
            deadline = time.monotonic() + 60
            while not (out / "run.json").exists():
                if scalp.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"scalp-bpf did not start ({scalp.poll()}): {scalp.stderr.read()}")
                time.sleep(0.02)
            load = subprocess.Popen([sys.executable, str(LOAD), "--seconds", str(seconds + 1), "--seed",
                                     str(seed), *ports], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _, err = scalp.communicate(timeout=120)
            if scalp.returncode != 0:
                raise RuntimeError(f"scalp-bpf run failed ({scalp.returncode}): {err}")
        finally:
            if scalp.poll() is None:
                scalp.kill()
                scalp.wait()
            if load is not None:
                report, err = load.communicate(timeout=60)
        if load.returncode != 0:
            raise RuntimeError(f"load driver failed ({load.returncode}): {report} {err}")
        return json.loads(report)

    def stop(self):
        for s in self.services.values():
            s.stop()
        for s in self.own:
            s.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


def diff(bases, head, *args):
    """`scalp-bpf diff` of base runs against head: (exit code, JSON report)."""
    argv = [SCALP, "diff", "--format", "json", *args, *map(str, bases), "--", str(head)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"diff failed ({r.returncode}): {r.stderr}")
    return r.returncode, json.loads(r.stdout)


def names(report, expected):
    """Whether the report flags each expected (metric, group, key, route)."""
    missing = []
    for metric, group, key, route in expected:
        hit = [x for x in report["regressions"] if x["metric"] == metric and x["group"] == group
               and all(x["key"].get(k) == v for k, v in key.items())]
        if not hit:
            missing.append(f"{metric} {group} {key}")
        elif route and not any(route in [f"{r['method']} {r['route']}" for r in x.get("routes", [])] for x in hit):
            missing.append(f"{metric} {group} {key}: route {route} not named")
    return missing


def protocol(stack, where, unchanged=23, regressed=20, seconds=8.0, log=print):
    """Makes the runs and judges them. Unchanged run i (≥ 1) against run i-1: the pairs; runs
    i-3..i-1 as bases: the three-base comparisons; each regressed run j against unchanged run j (one
    base) and against runs j..j+2 (three bases)."""
    where = pathlib.Path(where)
    plain = []
    for i in range(unchanged):
        out = where / f"unchanged-{i:02}"
        stack.run(out, seed=1000 + i, seconds=seconds)
        plain.append(out)
        log(f"unchanged run {i + 1}/{unchanged}")
    bad = []
    for j in range(regressed):
        out = where / f"regressed-{j:02}"
        stack.run(out, seed=2000 + j, seconds=seconds, knobs=REGRESSIONS)
        bad.append(out)
        log(f"regressed run {j + 1}/{regressed}")
    result = {"pairs": [], "three_bases": [], "regressed_one_base": [], "regressed_three_bases": []}
    for i in range(1, len(plain)):
        code, report = diff([plain[i - 1]], plain[i])
        result["pairs"].append({"head": plain[i].name, "exit": code, "flagged": flagged(report)})
    for i in range(3, len(plain)):
        code, report = diff(plain[i - 3:i], plain[i])
        result["three_bases"].append({"head": plain[i].name, "exit": code, "flagged": flagged(report)})
    for j, head in enumerate(bad):
        for kind, bases in (("regressed_one_base", [plain[j % len(plain)]]),
                            ("regressed_three_bases", [plain[(j + k) % len(plain)] for k in range(3)])):
            code, report = diff(bases, head)
            missing = {name: names(report, exp) for name, exp in EXPECTED.items()}
            result[kind].append({"head": head.name, "exit": code, "missing": missing, "flagged": flagged(report)})
    return result


def flagged(report):
    return [f"{x['metric']} {x['group']} {' · '.join(x['key'].values())} {x.get('change_text', '')}"
            for x in report["regressions"]]


def rates(result):
    """False alarms and detections, counted."""
    out = {
        "pairs": (sum(r["exit"] == 1 for r in result["pairs"]), len(result["pairs"])),
        "three_bases": (sum(r["exit"] == 1 for r in result["three_bases"]), len(result["three_bases"])),
    }
    for kind in ("regressed_one_base", "regressed_three_bases"):
        for name in EXPECTED:
            rows = result[kind]
            out[f"{kind}:{name}"] = (sum(r["exit"] == 1 and not r["missing"][name] for r in rows), len(rows))
    return out


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--unchanged", type=int, default=23)
    a.add_argument("--regressed", type=int, default=20)
    a.add_argument("--seconds", type=float, default=8.0)
    a.add_argument("--keep", help="a directory to keep the runs in")
    a.add_argument("--json", action="store_true")
    args = a.parse_args()
    where = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="scalp-gate-runs-"))
    where.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    stack = Stack()
    try:
        result = protocol(stack, where, args.unchanged, args.regressed, args.seconds,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(where, ignore_errors=True)
    elapsed = time.monotonic() - t0
    if args.json:
        print(json.dumps({"result": result, "rates": rates(result), "seconds": elapsed}))
        return
    for k, (n, of) in rates(result).items():
        print(f"{k:<45} {n:>3}/{of}")
    print(f"elapsed {elapsed:.0f} s")


if __name__ == "__main__":
    main()
