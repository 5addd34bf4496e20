"""`cargo xtask bench cache`: memaslap (libmemcached-tools' `memcaslap`: 90 % get, 10 % set, ~1 KiB
values, text protocol over TCP) against the tests' memcached, untraced and traced by scalp-bpf
(`run --pid <memaslap>`, default tracers), alternating in rotating order.

Per run: ops/s (memaslap's own count), memaslap's CPU time per op (its rusage: what tracing adds to
the traced client, the least noisy figure on this machine), and for traced runs whether scalp-bpf's
cache_ops calls equal memcached's own counters (cmd_get + cmd_set moved by exactly that much; only
memaslap talks to this memcached) with nothing dropped. Two loads, as fast as memaslap goes: with
--concurrency connections, and with one. Then one traced pass with bpf_stats on: program time per
op.
"""
import argparse
import collections
import os
import re
import subprocess

from common import (ProgramTimes, Scalp, fmt, free_port, log, main_guard, median, rotation, servers, spread,
                    start_server, table)


class Memaslap:
    """memcaslap held before exec by a shell, so that scalp-bpf can trace it from its first syscall."""

    def __init__(self, port, seconds, concurrency):
        cmd = f"exec memcaslap -s 127.0.0.1:{port} -T 1 -c {concurrency} -t {seconds}s"
        self.proc = subprocess.Popen(["sh", "-c", f"echo ready $$; read go; {cmd}"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"memcaslap wrapper said {line!r}")
        self.pid = int(line.split()[1])

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()

    def wait(self):
        """(ops, seconds, CPU seconds of memaslap from its rusage)."""
        out = self.proc.stdout.read()
        _, status, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0:
            raise RuntimeError(f"memcaslap failed ({self.proc.returncode}): {out[-1000:]}")
        m = re.search(r"Run time: ([\d.]+)s Ops: (\d+) TPS: (\d+)", out)
        if not m:
            raise RuntimeError(f"memcaslap said: {out[-1000:]}")
        stats = {k: int(v) for k, v in re.findall(r"^(cmd_get|cmd_set|get_misses): (\d+)", out, re.M)}
        return int(m.group(2)), float(m.group(1)), ru.ru_utime + ru.ru_stime, stats

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def scalp_args(port):
    return [] if port == 11211 else ["--cache-port", str(port)]


def counted(scalp, pid):
    out = collections.Counter()
    for r in scalp.table("cache_ops"):
        if r["process_pid"] == pid:
            out[r["db_operation_name"]] += r["calls"]
    return dict(out)


def one_run(cleanup, a, mc, concurrency, traced, stats_pass=False):
    load = Memaslap(mc.port, a.seconds, concurrency)
    cleanup.push(load.kill)
    scalp = Scalp(cleanup, a.scalp, [load.pid], scalp_args(mc.port)) if traced else None
    before = mc.stats()
    pt = ProgramTimes(scalp) if stats_pass else None
    if pt:
        pt.__enter__()
    load.go()
    try:
        ops, secs, cpu, own = load.wait()
    finally:
        if pt:
            pt.__exit__(None, None, None)
    after = mc.stats()
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in ("cmd_get", "cmd_set", "get_hits", "get_misses")}
    res = {"ops": ops, "rate": ops / secs, "cpu_us_per_op": cpu * 1e6 / max(ops, 1), "server": moved}
    if scalp:
        scalp.stop()
        seen = counted(scalp, load.pid)
        drops = scalp.drops()
        truth = {"get": moved["cmd_get"], "set": moved["cmd_set"]}
        res["exact"] = seen == truth and not drops
        res["drops"] = drops
        if not res["exact"]:
            log(f"  MISMATCH: scalp-bpf {seen} vs memcached {truth} (memaslap: {ops} ops); drops {drops}")
        if pt:
            res["programs"] = pt.by_name()
            res["traced_syscalls"] = scalp.syscalls({load.pid})
        scalp.remove()
    return res


def main(cleanup):
    p = argparse.ArgumentParser(prog="cargo xtask bench cache")
    p.add_argument("--scalp", required=True, help="the scalp-bpf binary")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=5, help="per memaslap run")
    p.add_argument("--concurrency", type=int, default=4, help="memaslap connections (one thread)")
    a = p.parse_args()
    mc = start_server(cleanup, servers.Memcached(port=free_port(11211)))
    # memaslap's -P (expected ops/s) is not held to by Debian's build (asked 5k, it ran 43k):
    # the rates are memaslap's own, as fast as it goes.
    loads = {f"{a.concurrency} connections": a.concurrency, "1 connection": 1}
    names = ["untraced", "traced"]
    results = collections.defaultdict(list)
    for r in range(a.rounds):
        for load, conc in loads.items():
            for sc in rotation(names, r):
                res = one_run(cleanup, a, mc, conc, sc == "traced")
                results[(load, sc)].append(res)
                log(f"round {r + 1} {load:<14} {sc:<9} {res['rate']:8.0f} ops/s {res['cpu_us_per_op']:6.2f} µs CPU/op"
                    + (f"  exact={res['exact']}" if "exact" in res else ""))
    stats = one_run(cleanup, a, mc, 1, True, stats_pass=True)

    print(f"\n### memcached: memaslap (90 % get / 10 % set), {a.seconds} s x {a.rounds} rounds, medians "
          f"(spread min/max vs median)\n")
    rows = []
    for load in loads:
        base = median([x["cpu_us_per_op"] for x in results[(load, "untraced")]])
        for sc in names:
            runs = results[(load, sc)]
            rate = [x["rate"] for x in runs]
            cpu = [x["cpu_us_per_op"] for x in runs]
            exact = "" if sc == "untraced" else ("yes" if all(x["exact"] for x in runs) else "NO")
            rows.append([load, sc, f"{fmt(median(rate))} ({spread(rate)})", f"{median(cpu):.2f} ({spread(cpu)})",
                         "" if sc == "untraced" else f"{median(cpu) - base:+.2f}", exact])
    print(table(["load", "scenario", "ops/s", "memaslap CPU µs/op", "added CPU µs/op", "exact, 0 lost"], rows))
    by_name = stats["programs"]
    runs = sum(r for r, _ in by_name.values())
    ns = sum(t for _, t in by_name.values())
    ops = stats["ops"]
    print(f"\nProgram time per op (traced, 1 connection, bpf_stats on, {fmt(ops)} ops at {fmt(stats['rate'])}/s; "
          f"every run of scalp-bpf's programs on the machine): {ns / max(ops, 1):,.0f} ns per op, "
          f"{runs / max(ops, 1):.1f} program runs per op (memaslap made {stats['traced_syscalls'] / max(ops, 1):.1f} "
          "syscalls per op: the other runs are other processes' syscalls); "
          + ", ".join(f"{n} {t / max(r, 1):.0f} ns x{r / max(ops, 1):.1f}"
                      for n, (r, t) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:4]))
    traced = [x for (load, sc), runs in results.items() if sc == "traced" for x in runs] + [stats]
    bad = [x for x in traced if not x["exact"]]
    ok = [x for x in traced if x["exact"]]
    print(f"\nTraced runs exact with 0 lost: {len(ok)} of {len(traced)}; highest rate among them: "
          f"{fmt(max((x['rate'] for x in ok), default=0))} ops/s")
    if bad:
        print(f"Runs with a difference or a loss: {[(round(x['rate']), x['drops']) for x in bad]}")
    return not bad


if __name__ == "__main__":
    main_guard(main)
