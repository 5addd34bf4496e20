"""What the Python benchmarks share (`cargo xtask bench mix|http|rpc|cache` run them with the tests'
virtualenv): scalp-bpf started and stopped around a window, the kernel's per-program statistics
(bpf_stats, on only while they are read), CPU and memory of processes from /proc, medians, and a
cleanup stack that ends everything a benchmark started — on success, on error and on SIGINT/SIGTERM
— then checks with bpftool that none of scalp-bpf's programs is left loaded.

The machine is shared and noisy: scenarios alternate in rotating order within one run and medians
are compared, never absolute figures from different runs.
"""
import json
import os
import re
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
WORKLOADS = TESTS / "workloads"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(WORKLOADS))

import servers  # noqa: E402

PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
STATS_SYSCTL = pathlib.Path("/proc/sys/kernel/bpf_stats_enabled")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Cleanup:
    """Callbacks run in reverse order at the end, whatever the way out. SIGTERM and SIGINT become
    exceptions so that the stack unwinds through the benchmark's `finally`."""

    def __init__(self):
        self.stack = []
        self.scalp_pids = []
        self.prog_ids = set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._raise)

    @staticmethod
    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def push(self, fn, *args):
        self.stack.append((fn, args))
        return fn

    def run(self):
        failed = False
        while self.stack:
            fn, args = self.stack.pop()
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 — the rest must be cleaned up too
                log(f"cleanup: {getattr(fn, '__name__', fn)}: {e}")
                failed = True
        left = left_behind(self.scalp_pids, self.prog_ids)
        if left:
            log(f"cleanup: LEFT BEHIND: {left}")
            failed = True
        else:
            log(f"cleanup: ok ({len(self.scalp_pids)} scalp-bpf runs ended, none of their "
                f"{len(self.prog_ids)} programs loaded, bpf_stats_enabled={STATS_SYSCTL.read_text().strip()})")
        return not failed


def left_behind(scalp_pids, prog_ids, timeout=10):
    """scalp-bpf processes still alive and programs of theirs still loaded (bpftool). The kernel
    frees a detached program after an RCU grace period: a few seconds are allowed."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in scalp_pids if pathlib.Path(f"/proc/{p}").exists()
                 and pathlib.Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"]
        loaded = sorted(prog_ids & {p["id"] for p in bpftool_progs()})
        if not (alive or loaded) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out = []
    if alive:
        out.append(f"scalp-bpf still running: {alive}")
    if loaded:
        out.append(f"programs still loaded: {loaded}")
    return "; ".join(out)


def bpftool_progs():
    r = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout or "[]")


def programs_of(pid):
    """{id: name} of the programs a process holds: the prog_id of its BPF program and link fds
    (/proc/PID/fdinfo; this bpftool cannot list a program's holders), named by bpftool."""
    ids = set()
    fdinfo = pathlib.Path(f"/proc/{pid}/fdinfo")
    for f in fdinfo.iterdir():
        try:
            text = f.read_text()
        except OSError:
            continue  # closed meanwhile
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return {p["id"]: p.get("name", str(p["id"])) for p in bpftool_progs() if p["id"] in ids}


def prog_snapshot(ids):
    """{id: (run_time_ns, run_cnt)} of these programs."""
    return {p["id"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in bpftool_progs() if p["id"] in ids}


class BpfStats:
    """kernel.bpf_stats_enabled on for the `with` block only (it adds two clock reads to every
    program run, so figures of rate, latency and CPU are never taken with it on), then restored."""

    def __enter__(self):
        self.old = STATS_SYSCTL.read_text().strip()
        STATS_SYSCTL.write_text("1")
        return self

    def __exit__(self, *exc):
        STATS_SYSCTL.write_text(self.old)


def proc_cpu_s(pid):
    """utime + stime of a process (all its threads, ended ones included), seconds; in clock ticks
    (10 ms): for windows of seconds."""
    f = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def proc_runtime_s(pid):
    """Time on CPU of a process's live threads to the nanosecond (/proc/PID/task/*/schedstat):
    for CPU time per request of single-threaded workers, where ticks are too coarse."""
    total = 0
    for t in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass  # the thread ended meanwhile
    return total / 1e9


def proc_mem_kib(pid):
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def proc_io(pid):
    """/proc/PID/io as a dict of ints (rchar, wchar, syscr, syscw, read_bytes, write_bytes…)."""
    out = {}
    for line in pathlib.Path(f"/proc/{pid}/io").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = int(v)
    return out


class Scalp:
    """One `scalp-bpf run --pid …` in the background, output in a scratch directory removed when it
    stops. Ready once run.json exists (written after the targets are marked)."""

    def __init__(self, cleanup, binary, pids, args=(), name="scalp-bpf"):
        self.name = name
        self.out = pathlib.Path(tempfile.mkdtemp(prefix="scalp-bench-", dir=scratch_dir())) / "run"
        cmd = [str(binary), "run", "--output", str(self.out), *map(str, args)]
        for p in pids:
            cmd += ["--pid", str(p)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cleanup.scalp_pids.append(self.proc.pid)
        self.cleanup = cleanup
        cleanup.push(self._kill)
        deadline = time.monotonic() + 60
        while not (self.out / "run.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._kill()
                raise RuntimeError(f"{name} did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.02)
        self.programs = programs_of(self.proc.pid)
        cleanup.prog_ids.update(self.programs)
        self.stderr = ""

    @property
    def pid(self):
        return self.proc.pid

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def mem_kib(self):
        return proc_mem_kib(self.proc.pid)

    def stop(self):
        """SIGINT, wait for it to write everything; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stderr = err
        if self.proc.returncode not in (0, 130):
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {err[-2000:]}")
        return self.proc.returncode

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def table(self, name):
        path = self.out / name
        if not path.exists():
            return []
        return pq.read_table(path).to_pylist()

    def syscalls(self, pids):
        """System calls scalp-bpf counted for these processes (read after stop())."""
        return sum(r["calls"] for r in self.table("syscalls") if r["process_pid"] in pids)

    def drops(self):
        """{(tracer, reason): count} from run.json, read after stop()."""
        meta = json.loads((self.out / "run.json").read_text())
        return {(d["tracer"], d["reason"]): d["count"] for d in meta.get("drops", [])}

    def remove(self):
        shutil.rmtree(self.out.parent, ignore_errors=True)


def scratch_dir():
    d = ROOT / "target" / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


class ProgramTimes:
    """Per-program runs and run time of a scalp-bpf run over a window, from bpf_stats (turned on
    for the window only)."""

    def __init__(self, scalp):
        self.scalp = scalp
        self.ids = dict(scalp.programs)

    def __enter__(self):
        self.stats = BpfStats().__enter__()
        self.before = prog_snapshot(self.ids)
        return self

    def __exit__(self, *exc):
        self.after = prog_snapshot(self.ids)
        self.stats.__exit__(*exc)

    def by_name(self):
        """{program name: (runs, run_time_ns)} (programs of one name summed)."""
        out = {}
        for pid, name in self.ids.items():
            t0, c0 = self.before.get(pid, (0, 0))
            t1, c1 = self.after.get(pid, (t0, c0))
            r, t = out.get(name, (0, 0))
            out[name] = (r + c1 - c0, t + t1 - t0)
        return out

    def total(self):
        runs = sum(r for r, _ in self.by_name().values())
        ns = sum(t for _, t in self.by_name().values())
        return runs, ns


def calibration(cleanup, binary, seconds, work):
    """Mean ns per run of empty sys_enter/sys_exit programs with bpf_stats on (`scalp-bpf
    calibrate`), while `work()` runs for `seconds`: the floor of the attach point plus the
    statistics' own clock reads, measured on the same load. Returns {name: (runs, ns)}."""
    proc = subprocess.Popen([str(binary), "calibrate"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    cleanup.scalp_pids.append(proc.pid)

    def stop():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    cleanup.push(stop)
    try:
        line = proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"scalp-bpf calibrate said {line!r}")
        ids = programs_of(proc.pid)
        cleanup.prog_ids.update(ids)
        with BpfStats():
            before = prog_snapshot(ids)
            work(seconds)
            after = prog_snapshot(ids)
        out = {}
        for i, name in ids.items():
            t0, c0 = before.get(i, (0, 0))
            t1, c1 = after.get(i, (t0, c0))
            r, t = out.get(name, (0, 0))
            out[name] = (r + c1 - c0, t + t1 - t0)
        return out
    finally:
        stop()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    """(min, max) as a ± percentage of the median, to say how noisy a figure is."""
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    m = statistics.median(xs)
    if not m:
        return ""
    return f"{(min(xs) / m - 1) * 100:+.0f}/{(max(xs) / m - 1) * 100:+.0f} %"


def rotation(names, round_index):
    """The scenarios in the order of this round (each round starts one further)."""
    k = round_index % len(names)
    return names[k:] + names[:k]


def table(header, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def sql_port_args(binary, db):
    """--sql-port when the database is not on its default port (the SQL tracer knows 3306/5432)."""
    default = 5432 if isinstance(db, servers.Postgres) else 3306
    return [] if db.port == default else ["--sql-port", str(db.port)]


def start_server(cleanup, server):
    """Starts a server of tests/servers.py and stops it at cleanup."""
    cleanup.push(server.stop)
    return server.start()


def fmt(x, digits=0):
    if x is None or x != x:
        return "—"
    return f"{x:,.{digits}f}"


def main_guard(fn):
    """Runs a benchmark's main with the cleanup stack; exit 1 when it or the cleanup failed."""
    cleanup = Cleanup()
    ok = False
    try:
        ok = fn(cleanup) is not False
    except KeyboardInterrupt as e:
        log(f"interrupted: {e}")
    finally:
        clean = cleanup.run()
    sys.exit(0 if ok and clean else 1)


class Uwsgi(servers.UwsgiHttp):
    """wsgi_app under uWSGI on 127.0.0.1:port as the HTTP tests run it (`http-socket`: one
    connection per request), or with `keepalive`, `http11-socket` (HTTP/1.1 keep-alive)."""

    def __init__(self, db, port, workers=2, keepalive=False):
        super().__init__(db, port=port, workers=workers,
                         base=servers.BASE / f"uwsgi-{'http11' if keepalive else 'http'}-{port}")
        self.keepalive = keepalive

    def start(self):
        self._fresh_base([self.port])
        opt = "--http11-socket" if self.keepalive else "--http-socket"
        # The stats server: each worker's own count of the requests it served. The request log
        # goes through the master's log pipe, which drops lines when it is full (seen above a
        # few thousand requests/s here): the log is compared per route only when it is whole.
        cmd = servers._uwsgi_cmd(self.base, [opt, f"127.0.0.1:{self.port}"], self.workers)
        cmd += ["--stats", str(self.base / "stats.sock")]
        self.proc = self._spawn(cmd, servers.app_env(self.db))
        self._wait(self.port, f"uwsgi ({opt})")
        servers._wait_workers_ready(self)
        return self

    def logged(self):
        """Lines in its request log so far."""
        path = self.base / "requests.log"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def served(self):
        """Requests served so far, by the workers' own counters (uWSGI's stats server)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.base / "stats.sock"))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return sum(w["requests"] for w in json.loads(data)["workers"])

    def settle(self, timeout=10):
        """Waits until the request log stops growing (a worker logs after it has answered)."""
        last, deadline = -1, time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.logged()
            if n == last:
                return n
            last = n
            time.sleep(0.3)
        return last


WRK_LUA = """
-- Generated by tests/bench: cycles through a fixed list of requests.
local reqs = {}
local n = 0
init = function(args)
  for i, r in ipairs(%(requests)s) do
    %(format)s
  end
end
request = function()
  n = n + 1
  return reqs[(n %% #reqs) + 1]
end
%(delay)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, ' ..
    '"timeouts": %%d, "non2xx": %%d, "latency_mean_us": %%.1f, "latency_p50_us": %%d, "latency_p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency.mean, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(path, requests, close=True, delay_ms=None):
    """Writes a wrk Lua script that sends `requests` [(method, path)] in turn, as HTTP/1.0 when the
    server closes after each response anyway (uWSGI http-socket), and a fixed delay before each
    request when paced. wrk prints one JSON line at the end."""
    lua = "{" + ", ".join(f'{{"{m}", "{p}"}}' for m, p in requests) + "}"
    if close:
        # HTTP/1.0: uWSGI's http-socket answers with the request's version and closes, and wrk
        # reconnects. To an HTTP/1.1 request it answers HTTP/1.1 without "Connection: close", so
        # wrk takes the connection as kept alive and writes its next request into a socket the
        # worker is closing (a read error per request, and requests the worker sometimes reads
        # and never answers: scalp-bpf counts those as `http request_without_response`).
        fmt_ = 'reqs[i] = r[1] .. " " .. r[2] .. " HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"'
    else:
        fmt_ = "reqs[i] = wrk.format(r[1], r[2])"
    delay = f"delay = function() return {delay_ms} end" if delay_ms else ""
    pathlib.Path(path).write_text(WRK_LUA % {"requests": lua, "format": fmt_, "delay": delay})
    return path


class Wrk:
    """wrk running a script for `seconds` (started at once; wait() returns its JSON line)."""

    def __init__(self, url, script, seconds, connections, threads=1):
        self.proc = subprocess.Popen(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                                      "--timeout", "10s", "-s", str(script), url],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self):
        out, err = self.proc.communicate(timeout=600)
        if self.proc.returncode != 0:
            raise RuntimeError(f"wrk failed: {err or out}")
        line = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not line:
            raise RuntimeError(f"wrk said: {out}")
        r = json.loads(line[-1])
        r["rate"] = r["requests"] / (r["duration_us"] / 1e6)
        return r

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def free_port(default):
    """A port for a server of ours: away from the default (test sessions running meanwhile use
    it), so scalp-bpf is told the port (--sql-port, --rpc-port, --cache-port) as operators do."""
    return servers.pick_port(default + 20000)


def tracers_of(binary):
    """The tracers a scalp-bpf build can run (from `run --help`): an earlier build compared in the
    same rounds may lack some (its default then traces less, and has nothing to count them with)."""
    r = subprocess.run([str(binary), "run", "--help"], capture_output=True, text=True)
    text = " ".join(r.stdout.split())
    at = text.find("[possible values:", text.find("--tracers"))
    if at >= 0:
        return {t.strip() for t in text[at + len("[possible values:"):text.index("]", at)].split(",")}
    # Long help: "Possible values: - syscalls: … - fileio: …" up to the next option.
    at = text.find("Possible values:", text.find("--tracers"))
    if at < 0:
        return set()
    end = text.find(" --", at)
    return set(re.findall(r"- (\w+):", text[at:end if end > 0 else None]))
