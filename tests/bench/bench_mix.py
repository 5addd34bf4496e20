"""`cargo xtask bench mix`: what scalp-bpf costs on a service mix like an OpenStack control plane's,
rather than in a getppid loop (issue 15).

The mix, all at once on this machine:
  - wsgi_app under uWSGI (`http-socket`, 2 workers) on MariaDB, driven by wrk (4 connections, a
    route mix: GET /items/{id} 200 and 404 with 3 SELECTs each, GET /boom: 1 SELECT and a 500, an
    unknown path: 404 without SQL), paced at about --http-rate requests/s (0: as fast as it goes);
  - a writer appending 8 KiB and fsyncing, --fsync-rate times a second, on an ext4 file system of
    its own (a loop device over /dev/shm: block I/O without the shared disk's noise);
  - a buffered writer overwriting a ring of files at --buffered-mib MiB/s on a second such file
    system, never syncing: the kernel's flusher writes its pages back (a strict 16 MiB dirty
    limit on that device makes it write back steadily rather than in bursts every 30 s);
  - untraced twins of both writers, and MariaDB and wrk, untraced.
Scenarios, alternating in rotating order each round: untraced; scalp-bpf with its default flags
(all tracers) on the traced processes (`run --pid <uWSGI master> --pid <fsync writer> --pid
<buffered writer>`); the same with `--tracers syscalls`; and with --compare BIN, the same two for an
earlier build.

Per traced scenario and round: a window of --seconds with bpf_stats off (the workload's rates and
latency, scalp-bpf's CPU as a % of one core from /proc/PID/stat, its RSS), then a window of
--stats-seconds with kernel.bpf_stats_enabled on (restored after): runs and mean ns of every
program. Every traced run must count exactly the HTTP requests uWSGI logged, with nothing dropped.
At the end, empty sys_enter/sys_exit programs (`scalp-bpf calibrate`) are measured the same way on
the same mix: the floor of the attach point and the statistics' own clock reads.
"""
import argparse
import collections
import os
import pathlib
import subprocess
import time

from common import (PYTHON, ProgramTimes, Scalp, Uwsgi, WORKLOADS, Wrk, calibration, fmt, free_port, log,
                    main_guard, median, proc_io, rotation, scratch_dir, servers, spread, sql_port_args,
                    start_server, table, wrk_script)
from bench_http import Window, app_requests, create_items


class LoopFs:
    """An ext4 file system on a loop device over a /dev/shm file, mounted in a scratch directory;
    unmounted, detached and deleted at cleanup."""

    def __init__(self, cleanup, name, mib=512):
        self.cleanup = cleanup
        self.image = pathlib.Path(f"/dev/shm/scalp-bench-{name}-{os.getpid()}.img")
        with open(self.image, "wb") as f:
            f.truncate(mib << 20)
        cleanup.push(self.image.unlink, True)
        r = subprocess.run(["losetup", "--find", "--show", str(self.image)], capture_output=True, text=True,
                           check=True)
        self.dev = r.stdout.strip()
        cleanup.push(lambda: subprocess.run(["losetup", "-d", self.dev], check=True))
        subprocess.run(["mkfs.ext4", "-q", "-F", self.dev], check=True, capture_output=True)
        self.mnt = scratch_dir() / f"mix-{name}-{os.getpid()}"
        self.mnt.mkdir(parents=True, exist_ok=True)
        cleanup.push(self.mnt.rmdir)
        subprocess.run(["mount", self.dev, str(self.mnt)], check=True)
        cleanup.push(lambda: subprocess.run(["umount", str(self.mnt)], check=True))
        self.name = os.path.basename(self.dev)

    def prompt_writeback(self, limit_mib=16):
        """Lets the flusher write this device's dirty pages back as soon as they pass `limit_mib`
        (a strict per-device dirty limit, /sys/class/bdi/…/max_bytes, kernel 6.2+), instead of
        in bursts every 30 s when they expire: a steady writeback rate in any window. The loop
        device keeps its bdi after it is detached: the old values are put back."""
        rdev = os.stat(self.dev).st_rdev
        bdi = pathlib.Path(f"/sys/class/bdi/{os.major(rdev)}:{os.minor(rdev)}")
        if not (bdi / "max_bytes").exists():
            log(f"{bdi}/max_bytes missing (kernel < 6.2): writeback comes in 30 s bursts")
            return
        # max_bytes is kept as a ratio of the dirty limit, which moves with free memory: the
        # ratio is what is saved and put back.
        for name, set_as, value in (("max_ratio", "max_bytes", str(limit_mib << 20)),
                                    ("strict_limit", "strict_limit", "1")):
            old = (bdi / name).read_text().strip()
            self.cleanup.push((bdi / name).write_text, old)
            (bdi / set_as).write_text(value)

    def written(self):
        """Bytes written to the device so far (/sys/block/loopN/stat: sectors written)."""
        f = pathlib.Path(f"/sys/block/{self.name}/stat").read_text().split()
        return int(f[6]) * 512


class Writer:
    def __init__(self, cleanup, *args):
        self.proc = subprocess.Popen([PYTHON, str(WORKLOADS / "writer.py"), *map(str, args)], stdout=subprocess.PIPE,
                                     text=True)
        cleanup.push(self.stop)
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"writer.py said {line!r}")
        self.pid = self.proc.pid

    def io(self):
        return proc_io(self.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def main(cleanup):
    p = argparse.ArgumentParser(prog="cargo xtask bench mix")
    p.add_argument("--scalp", required=True, help="the scalp-bpf binary")
    p.add_argument("--compare", help="an earlier scalp-bpf build whose scenarios run in the same rounds")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=20, help="the window of rates, CPU and RSS")
    p.add_argument("--stats-seconds", type=int, default=10, help="the window with bpf_stats on")
    p.add_argument("--http-rate", type=float, default=400, help="requests/s asked of wrk (0: as fast as it goes)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--fsync-rate", type=float, default=100, help="fsyncs/s of each fsync writer")
    p.add_argument("--buffered-mib", type=float, default=4, help="MiB/s of each buffered writer")
    p.add_argument("--no-syscalls-only", action="store_true", help="skip the --tracers syscalls scenarios")
    a = p.parse_args()
    db = start_server(cleanup, servers.MariaDB(port=free_port(3306)))
    servers.prepare_app_database(db)
    app = start_server(cleanup, Uwsgi(db, free_port(8080)))
    ids = create_items(app.port, 20)
    started = time.monotonic()
    journal, data = LoopFs(cleanup, "journal"), LoopFs(cleanup, "data")
    data.prompt_writeback()
    writers = {
        "fsync": Writer(cleanup, "fsync", "--dir", journal.mnt, "--rate", a.fsync_rate),
        "fsync twin": Writer(cleanup, "fsync", "--dir", journal.mnt, "--rate", a.fsync_rate),
        "buffered": Writer(cleanup, "buffered", "--dir", data.mnt, "--mib-per-s", a.buffered_mib),
        "buffered twin": Writer(cleanup, "buffered", "--dir", data.mnt, "--mib-per-s", a.buffered_mib),
    }
    traced_pids = [app.proc.pid, writers["fsync"].pid, writers["buffered"].pid]
    url = f"http://127.0.0.1:{app.port}"
    d = scratch_dir()
    # wrk paces by a delay before each request on each connection: the delay that gives the rate
    # asked, given the latency measured now (untraced).
    delay = None
    if a.http_rate:
        probe = Wrk(url, wrk_script(d / "mix-probe.lua", app_requests(ids)), 3, a.connections).wait()
        delay = max(1, round(a.connections * 1000 / a.http_rate - probe["latency_mean_us"] / 1000))
        log(f"wrk: {probe['rate']:.0f} requests/s unpaced, {probe['latency_mean_us']:.0f} µs; delay {delay} ms")
    script = wrk_script(d / "mix.lua", app_requests(ids), delay_ms=delay)
    # Until the flusher writes back as fast as the buffered writers dirty.
    warm = 10 - (time.monotonic() - started)
    log(f"warming up {warm:.0f} s (writeback reaches its steady state)")
    time.sleep(max(0, warm))

    scenarios = {"untraced": None, "all tracers": (a.scalp, [])}
    if not a.no_syscalls_only:
        scenarios["syscalls only"] = (a.scalp, ["--tracers", "syscalls"])
    if a.compare:
        scenarios["all tracers (compared)"] = (a.compare, [])
        if not a.no_syscalls_only:
            scenarios["syscalls only (compared)"] = (a.compare, ["--tracers", "syscalls"])
    names = list(scenarios)
    results = collections.defaultdict(list)

    def window(seconds, scalp=None, stats=False):
        """Runs wrk for `seconds`; returns the rates over the window (and program times)."""
        w0 = {k: v.io() for k, v in writers.items()}
        dev0 = {"journal": journal.written(), "data": data.written()}
        c0 = scalp.cpu_s() if scalp else None
        t0 = time.monotonic()
        pt = ProgramTimes(scalp) if stats else None
        if pt:
            pt.__enter__()
        try:
            res = Wrk(url, script, seconds, a.connections).wait()
        finally:
            if pt:
                pt.__exit__(None, None, None)
        dt = time.monotonic() - t0
        w1 = {k: v.io() for k, v in writers.items()}
        for k in writers:
            if k.startswith("fsync"):
                res[f"{k} fsyncs/s"] = (w1[k]["syscw"] - w0[k]["syscw"]) / dt
            else:
                res[f"{k} MiB/s dirtied"] = (w1[k]["wchar"] - w0[k]["wchar"]) / dt / 2**20
        res["data MiB/s written back"] = (data.written() - dev0["data"]) / dt / 2**20
        res["journal MiB/s written"] = (journal.written() - dev0["journal"]) / dt / 2**20
        if scalp:
            res["scalp CPU %"] = (scalp.cpu_s() - c0) / dt * 100
            res["rss"], _ = scalp.mem_kib()
        if pt:
            res["programs"] = pt.by_name()
            res["programs_s"] = dt
        return res

    for r in range(a.rounds):
        for sc in rotation(names, r):
            if scenarios[sc] is None:
                res = window(a.seconds)
            else:
                binary, extra = scenarios[sc]
                scalp = Scalp(cleanup, binary, traced_pids, [*sql_port_args(binary, db), *extra])
                http = Window(app)
                time.sleep(1)
                res = window(a.seconds, scalp)
                res.update({k: v for k, v in window(a.stats_seconds, scalp, stats=True).items()
                            if k.startswith("programs")})
                _, res["hwm"] = scalp.mem_kib()
                scalp.stop()
                if "--tracers" in extra:
                    # Without the HTTP tracer there are no requests to compare.
                    res["drops"] = scalp.drops()
                    res["exact"] = not res["drops"]
                else:
                    res["exact"], res["drops"] = http.check(scalp, binary, set(app.worker_pids()))
                scalp.remove()
            results[sc].append(res)
            log(f"round {r + 1} {sc:<26} {res['rate']:6.0f} req/s {res['latency_mean_us']:7.0f} µs "
                f"fsync {res['fsync fsyncs/s']:4.0f}/s wb {res['data MiB/s written back']:5.1f} MiB/s"
                + (f" scalp {res['scalp CPU %']:4.1f} % CPU {res['rss'] / 1024:5.1f} MiB exact={res['exact']}"
                   if "exact" in res else ""))

    floor = calibration(cleanup, a.scalp, a.stats_seconds,
                        lambda s: Wrk(url, script, s, a.connections).wait())
    report(a, names, results, floor)
    bad = [x for sc in names for x in results[sc] if "exact" in x and not x["exact"]]
    return not bad


def report(a, names, results, floor):
    print(f"\n### Service mix: uWSGI + MariaDB under wrk (~{a.http_rate:g} req/s asked), fsync writer "
          f"({a.fsync_rate:g}/s), buffered writer ({a.buffered_mib:g} MiB/s), untraced twins; {a.rounds} rounds x "
          f"{a.seconds} s (+ {a.stats_seconds} s with bpf_stats); medians (spread min/max vs median)\n")
    cols = [("requests/s", "rate", 0), ("latency µs", "latency_mean_us", 0), ("p99 µs", "latency_p99_us", 0),
            ("fsyncs/s traced", "fsync fsyncs/s", 0), ("fsyncs/s twin", "fsync twin fsyncs/s", 0),
            ("MiB/s written back", "data MiB/s written back", 1), ("scalp-bpf CPU % of a core", "scalp CPU %", 2)]
    rows = []
    for sc in names:
        runs = results[sc]
        row = [sc]
        for _, key, digits in cols:
            xs = [x.get(key) for x in runs if x.get(key) is not None]
            row.append(f"{fmt(median(xs), digits)} ({spread(xs)})" if xs else "—")
        rss = [x["rss"] / 1024 for x in runs if "rss" in x]
        hwm = [x["hwm"] / 1024 for x in runs if "hwm" in x]
        row.append(f"{median(rss):.1f} / {median(hwm):.1f}" if rss else "—")
        row.append("" if sc == "untraced" else ("yes" if all(x["exact"] for x in runs) else "NO"))
        rows.append(row)
    print(table(["scenario", *(c[0] for c in cols), "RSS / HWM MiB", "exact, 0 lost"], rows))

    traced = [sc for sc in names if sc != "untraced"]
    progs = sorted({n for sc in traced for x in results[sc] for n in x.get("programs", {})})
    print(f"\nPer program, {a.stats_seconds} s windows with bpf_stats on: runs per window and mean ns per run "
          "(medians over the rounds)\n")
    rows = []
    for n in progs:
        row = [n]
        for sc in traced:
            runs = [x["programs"][n][0] for x in results[sc] if n in x.get("programs", {})]
            means = [x["programs"][n][1] / x["programs"][n][0] for x in results[sc]
                     if x.get("programs", {}).get(n, (0, 0))[0]]
            row += [fmt(median(runs)) if runs else "—", f"{median(means):,.0f}" if means else "—"]
        rows.append(row)
    total = ["all programs, % of one CPU"]
    for sc in traced:
        share = [sum(t for _, t in x["programs"].values()) / 1e9 / x["programs_s"] * 100 for x in results[sc]]
        total += ["", f"{median(share):.2f} %"]
    rows.append(total)
    header = ["program"]
    for sc in traced:
        header += [f"{sc}: runs", "mean ns"]
    print(table(header, rows))
    print("\nFloor on the same mix (empty tp_btf programs, `scalp-bpf calibrate`, bpf_stats on): "
          + ", ".join(f"{n} {t / max(r, 1):.0f} ns x{fmt(r)}" for n, (r, t) in sorted(floor.items())))
    bad = [(sc, x["drops"]) for sc in traced for x in results[sc] if not x["exact"]]
    print("\nEvery traced run dropped nothing, and with the HTTP tracer counted exactly the requests uWSGI "
          f"logged (per method, route, status): {'yes' if not bad else 'NO'}")
    if bad:
        print(f"Runs with a difference or a loss: {bad}")


if __name__ == "__main__":
    main_guard(main)
