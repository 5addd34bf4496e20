"""`cargo xtask bench http`: wrk against wsgi_app under uWSGI (2 workers, MariaDB), untraced and
traced by scalp-bpf (`run --pid <uWSGI master>`, default tracers), alternating in one run.

Three workloads, each with wrk's closed loop at --connections (throughput) and at 1 connection
(latency):
  app            a route mix with SQL (GET /items/{id} 200 and 404: 3 SELECTs; GET /boom: 1 SELECT
                 and a 500; an unknown path: 404, no SQL), uWSGI `http-socket` (a connection per
                 request, as the HTTP tests run it);
  trivial        GET of an unknown path (a JSON 404 without SQL), `http-socket`;
  trivial-ka     the same over HTTP/1.1 keep-alive (`http11-socket`).
Per run: requests/s and mean latency (wrk), the uWSGI workers' CPU time per request (from
/proc: what tracing adds to the served process, the least noisy figure here), and for traced runs
whether scalp-bpf counted exactly what uWSGI served — its workers' own counters (stats server),
and its request log per method, route and status when the log is whole — with nothing dropped. Then, per workload, one traced pass at 1 connection with bpf_stats on:
scalp-bpf's program time per request (every program run on the machine, all processes).
"""
import argparse
import collections
import json
import re
import urllib.request

from common import (ProgramTimes, Scalp, Uwsgi, Wrk, fmt, free_port, log, main_guard, median,
                    proc_runtime_s, rotation, scratch_dir, servers, spread, sql_port_args, start_server, table, tracers_of,
                    wrk_script)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TRIVIAL = "/nothing/here"


def route(uri):
    return UUID.sub("{id}", uri.split("?")[0])


def create_items(port, n):
    ids = []
    for i in range(n):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/items", data=json.dumps({"name": f"bench-{i}"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            ids.append(json.loads(r.read())["id"])
    return ids


def app_requests(ids):
    unknown = "00000000-0000-4000-8000-000000000000"
    reqs = [("GET", f"/items/{ids[i % len(ids)]}") for i in range(6)]
    reqs += [("GET", f"/items/{unknown}"), ("GET", f"/items/{unknown}"), ("GET", TRIVIAL), ("GET", "/boom")]
    return reqs


def counted(scalp, worker_pids):
    """scalp-bpf's server-side requests per (method, route, status) of the uWSGI workers."""
    out = collections.Counter()
    for r in scalp.table("http_requests"):
        if r["direction"] == "server" and r["process_pid"] in worker_pids:
            out[(r["http_request_method"], r["http_route"], r["http_response_status_code"])] += r["calls"]
    return dict(out)


def logged(server, start, end):
    out = collections.Counter()
    for r in server.requests()[start:end]:
        out[(r["method"], route(r["uri"]), r["status"])] += 1
    return dict(out)


class Window:
    """What uWSGI says it served over a traced run: its workers' counters (exact) and its request
    log (per method, route and status, when no line was lost)."""

    def __init__(self, server):
        self.server = server
        self.n0, self.s0 = server.settle(), server.served()

    def check(self, scalp, binary, workers):
        """Whether scalp-bpf counted exactly what uWSGI served, with nothing dropped. Call after
        scalp-bpf stopped."""
        n1, s1 = self.server.settle(), self.server.served()
        drops = scalp.drops()
        self.log_lost = 0
        if "http" not in tracers_of(binary):
            return not drops, drops  # an earlier build without the HTTP tracer
        seen = counted(scalp, workers)
        served, lines = s1 - self.s0, n1 - self.n0
        ok = sum(seen.values()) == served and not drops
        truth = None
        if lines == served:
            truth = logged(self.server, self.n0, n1)
            ok = ok and seen == truth
        else:
            self.log_lost = served - lines
            log(f"  uWSGI's request log lost {self.log_lost} of {served} lines (its workers counted {served})")
        if not ok:
            log(f"  MISMATCH: scalp-bpf {seen} ({sum(seen.values())}) vs uWSGI {truth or served}; drops {drops}")
        return ok, drops


def one_run(cleanup, a, server, script, connections, binary, seconds):
    """One wrk run; traced when `binary`. Returns a dict of what was measured."""
    workers = server.worker_pids()
    scalp = None
    if binary:
        scalp = Scalp(cleanup, binary, [server.proc.pid], sql_port_args(binary, server.db))
    window = Window(server)
    cpu0 = sum(proc_runtime_s(w) for w in workers)
    res = Wrk(f"http://127.0.0.1:{server.port}", script, seconds, connections).wait()
    served = server.served() - window.s0
    cpu1 = sum(proc_runtime_s(w) for w in workers)
    res["served"] = served
    res["cpu_us_per_request"] = (cpu1 - cpu0) * 1e6 / max(served, 1)
    if scalp:
        scalp.stop()
        res["exact"], res["drops"] = window.check(scalp, binary, set(workers))
        res["log_lost"] = window.log_lost
        if not res["exact"]:
            log(f"  wrk: {res['requests']} responses, errors connect {res['connect_errors']} read "
                f"{res['read_errors']} write {res['write_errors']} timeouts {res['timeouts']}; uWSGI served {served}")
        scalp.remove()
    return res


def program_pass(cleanup, a, server, script, binary):
    """Traced, 1 connection, bpf_stats on: ({program: (runs, ns)}, requests served)."""
    scalp = Scalp(cleanup, binary, [server.proc.pid], sql_port_args(binary, server.db))
    s0 = server.served()
    with ProgramTimes(scalp) as pt:
        Wrk(f"http://127.0.0.1:{server.port}", script, a.seconds, 1).wait()
        s1 = server.served()
    scalp.stop()
    traced = scalp.syscalls(set(server.worker_pids()))
    scalp.remove()
    return pt.by_name(), s1 - s0, traced


def main(cleanup):
    p = argparse.ArgumentParser(prog="cargo xtask bench http")
    p.add_argument("--scalp", required=True, help="the scalp-bpf binary")
    p.add_argument("--compare", help="an earlier scalp-bpf build traced in the same rounds")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=5, help="per wrk run")
    p.add_argument("--connections", type=int, default=4, help="wrk connections for the throughput runs")
    p.add_argument("--workloads", default="app,trivial,trivial-ka")
    a = p.parse_args()

    db = start_server(cleanup, servers.MariaDB(port=free_port(3306)))
    servers.prepare_app_database(db)
    close_srv = start_server(cleanup, Uwsgi(db, free_port(8080)))
    ids = create_items(close_srv.port, 20)
    wanted = a.workloads.split(",")
    keep_srv = start_server(cleanup, Uwsgi(db, free_port(8082), keepalive=True)) \
        if "trivial-ka" in wanted else None
    d = scratch_dir()
    workloads = {
        "app": (close_srv, wrk_script(d / "app.lua", app_requests(ids))),
        "trivial": (close_srv, wrk_script(d / "trivial.lua", [("GET", TRIVIAL)])),
        "trivial-ka": (keep_srv, wrk_script(d / "trivial-ka.lua", [("GET", TRIVIAL)], close=False)),
    }
    workloads = {k: v for k, v in workloads.items() if k in wanted}
    scenarios = {"untraced": None, "traced": a.scalp}
    if a.compare:
        scenarios["traced (compared)"] = a.compare
    names = list(scenarios)
    results = collections.defaultdict(list)  # (workload, connections, scenario) -> [run]
    # A keep-alive connection holds a uWSGI worker until it closes: no more connections than workers.
    tp_conns = {"app": a.connections, "trivial": a.connections, "trivial-ka": 2}
    for mode in ("throughput", "latency"):
        for r in range(a.rounds):
            for wl, (server, script) in workloads.items():
                conns = tp_conns[wl] if mode == "throughput" else 1
                for sc in rotation(names, r):
                    res = one_run(cleanup, a, server, script, conns, scenarios[sc], a.seconds)
                    res["conns"] = conns
                    results[(wl, mode, sc)].append(res)
                    log(f"c={conns} round {r + 1} {wl:<10} {sc:<18} {res['rate']:8.0f} req/s "
                        f"{res['latency_mean_us']:8.0f} µs  {res['cpu_us_per_request']:6.1f} µs CPU/req"
                        + (f"  exact={res['exact']}" if "exact" in res else ""))
    programs = {}
    for wl, (server, script) in workloads.items():
        programs[wl] = program_pass(cleanup, a, server, script, a.scalp)

    print(f"\n### HTTP: wrk against wsgi_app under uWSGI (2 workers, MariaDB), {a.seconds} s x {a.rounds} rounds, "
          f"medians (spread min/max vs median)\n")
    rows = []
    for wl in workloads:
        for mode in ("throughput", "latency"):
            base = results[(wl, mode, "untraced")]
            for sc in names:
                runs = results[(wl, mode, sc)]
                conns = runs[0]["conns"]
                rate = [x["rate"] for x in runs]
                lat = [x["latency_mean_us"] for x in runs]
                cpu = [x["cpu_us_per_request"] for x in runs]
                added_lat = median(lat) - median([x["latency_mean_us"] for x in base])
                added_cpu = median(cpu) - median([x["cpu_us_per_request"] for x in base])
                exact = "" if sc == "untraced" else ("yes" if all(x["exact"] for x in runs) else "NO")
                rows.append([wl, conns, sc, f"{fmt(median(rate))} ({spread(rate)})",
                             f"{fmt(median(lat))} ({spread(lat)})",
                             "" if sc == "untraced" else f"{added_lat:+.1f}",
                             f"{median(cpu):.1f} ({spread(cpu)})",
                             "" if sc == "untraced" else f"{added_cpu:+.1f}", exact])
    print(table(["workload", "conns", "scenario", "requests/s", "latency µs", "added µs", "worker CPU µs/req",
                 "added CPU µs/req", "exact, 0 lost"], rows))
    print("\nProgram time per request (traced, 1 connection, bpf_stats on; every run of scalp-bpf's programs on "
          "the machine — the workers', MariaDB's, wrk's syscalls — divided by the requests served):\n")
    prow = []
    for wl, (by_name, served, traced) in programs.items():
        runs = sum(r for r, _ in by_name.values())
        ns = sum(t for _, t in by_name.values())
        top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:4]
        prow.append([wl, fmt(served), f"{ns / max(served, 1):,.0f} ns", f"{runs / max(served, 1):.1f}",
                     f"{traced / max(served, 1):.1f}",
                     ", ".join(f"{n} {t / max(r, 1):.0f} ns x{r / max(served, 1):.1f}" for n, (r, t) in top)])
    print(table(["workload", "requests", "program ns/request", "program runs/request", "worker syscalls/request",
                 "top programs (mean ns x runs/request)"], prow))
    traced = [x for (wl, c, sc), runs in results.items() if sc != "untraced" for x in runs]
    ok = [x for x in traced if x["exact"]]
    print(f"\nTraced runs exact with 0 lost: {len(ok)} of {len(traced)}; highest rate among them: "
          f"{fmt(max((x['rate'] for x in ok), default=0))} requests/s")
    bad = [x for x in traced if not x["exact"]]
    if bad:
        print(f"Runs with a difference or a loss: {[(round(x['rate']), x['drops']) for x in bad]}")
    lost = [(round(x["rate"]), x["log_lost"]) for x in traced if x.get("log_lost")]
    if lost:
        print(f"uWSGI's own request log lost lines (its log pipe was full; compared by its workers' counters "
              f"instead) in runs at (requests/s, lines lost): {lost}")
    return not bad


if __name__ == "__main__":
    main_guard(main)
