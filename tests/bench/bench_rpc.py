"""`cargo xtask bench rpc`: oslo.messaging-shaped casts through the tests' RabbitMQ, published and
consumed (acked) by two py-amqp processes (tests/workloads/amqp_load.py), untraced and traced
by scalp-bpf (`run --pid <publisher> --pid <consumer>`, default tracers), alternating in rotating
order.

Per run: messages/s end to end (first publish to last delivery), the two processes' CPU time per
message (what tracing adds to the traced processes, the least noisy figure on this machine), and
for traced runs whether scalp-bpf's rpc_calls count exactly the messages published (client casts
of the publisher) and delivered (server casts of the consumer), equal to what the workload did and
to RabbitMQ's own counter of publishes, with nothing dropped. Two loads: as fast as the publisher
goes, and paced at --rate. Then one traced pass with bpf_stats on: program time per message.
"""
import argparse
import collections
import json
import subprocess

from common import (PYTHON, ProgramTimes, Scalp, WORKLOADS, fmt, free_port, log, main_guard, median, rotation,
                    servers, spread, start_server, table)


class Side:
    def __init__(self, cleanup, *args):
        self.proc = subprocess.Popen([PYTHON, str(WORKLOADS / "amqp_load.py"), *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cleanup.push(self.kill)
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"amqp_load.py said {line!r}")
        self.pid = int(line.split()[1])

    def result(self):
        line = self.proc.stdout.readline()
        self.proc.wait(timeout=120)
        if self.proc.returncode != 0 or not line.startswith("{"):
            raise RuntimeError(f"amqp_load.py failed ({self.proc.returncode}): {line!r}")
        return json.loads(line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def counted(scalp, pid, direction):
    out = collections.Counter()
    for r in scalp.table("rpc_calls"):
        if r["process_pid"] == pid and r["direction"] == direction:
            out[(r["rpc_kind"], r["rpc_method"])] += r["calls"]
    return dict(out)


def one_run(cleanup, a, rabbit, url, count, rate, raw, traced, stats_pass=False):
    mode = ["--raw", "--prefetch", 1000] if raw else []
    con = Side(cleanup, "consume", "--url", url, "--count", count, *mode,
               *(["--recv-bytes", a.recv_bytes] if raw else []))
    pub = Side(cleanup, "publish", "--url", url, "--count", count, "--rate", rate, *mode)
    before = rabbit.counters()
    scalp = None
    if traced:
        scalp = Scalp(cleanup, a.scalp, [pub.pid, con.pid], [] if rabbit.port == 5672 else ["--rpc-port", rabbit.port])
    pt = ProgramTimes(scalp) if stats_pass else None
    if pt:
        pt.__enter__()
    try:
        pub.proc.stdin.write("go\n")
        pub.proc.stdin.flush()
        p, c = pub.result(), con.result()
    finally:
        if pt:
            pt.__exit__(None, None, None)
    after = rabbit.counters()
    published = after.get("messages_received_total", 0) - before.get("messages_received_total", 0)
    res = {"count": count, "rate": c["received"] / (c["last"] - p["start"]) if c["received"] else 0.0,
           "publish_rate": p["published"] / (p["end"] - p["start"]),
           "cpu_us_per_msg": (p["cpu_s"] + c["cpu_s"]) * 1e6 / count,
           "workload_ok": p["published"] == c["received"] == published == count}
    if not res["workload_ok"]:
        log(f"  the workload itself lost messages: published {p['published']}, received {c['received']}, "
            f"RabbitMQ counted {published}")
    if scalp:
        scalp.stop()
        client, server = counted(scalp, pub.pid, "client"), counted(scalp, con.pid, "server")
        drops = scalp.drops()
        want = {("cast", "echo"): count}
        res["exact"] = client == want and server == want and not drops and res["workload_ok"]
        res["drops"] = drops
        if not res["exact"]:
            log(f"  MISMATCH: scalp-bpf client {client}, server {server} vs {count} published "
                f"(RabbitMQ: {published}); drops {drops}")
        if pt:
            res["programs"] = pt.by_name()
            res["traced_syscalls"] = scalp.syscalls({pub.pid, con.pid})
        scalp.remove()
    return res


def main(cleanup):
    p = argparse.ArgumentParser(prog="cargo xtask bench rpc")
    p.add_argument("--scalp", required=True, help="the scalp-bpf binary")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--count", type=int, default=40000, help="messages per run (py-amqp: a quarter)")
    p.add_argument("--rate", type=int, default=20000, help="the paced load, messages/s")
    p.add_argument("--recv-bytes", type=int, default=16384,
                   help="the batched consumer's bytes per receive (scalp-bpf captures 16 KiB of each)")
    a = p.parse_args()
    rabbit = start_server(cleanup, servers.RabbitMQ(port=free_port(5672)))
    url = f"amqp://{rabbit.user}:{rabbit.password}@127.0.0.1:{rabbit.port}/"
    # py-amqp as oslo.messaging drives it (a receive per frame part, an ack per message), then
    # the same frames batched on its socket, as fast as it goes and paced at --rate.
    loads = {"py-amqp": (0, False), "batched": (0, True), f"batched, paced {a.rate}/s": (a.rate, True)}
    # py-amqp is several times slower: a quarter of the messages keeps its runs as long.
    counts = {"py-amqp": a.count // 4}
    names = ["untraced", "traced"]
    results = collections.defaultdict(list)
    for r in range(a.rounds):
        for load, (rate, raw) in loads.items():
            for sc in rotation(names, r):
                res = one_run(cleanup, a, rabbit, url, counts.get(load, a.count), rate, raw, sc == "traced")
                results[(load, sc)].append(res)
                log(f"round {r + 1} {load:<14} {sc:<9} {res['rate']:8.0f} msgs/s (published at "
                    f"{res['publish_rate']:.0f}/s) {res['cpu_us_per_msg']:6.1f} µs CPU/msg"
                    + (f"  exact={res['exact']}" if "exact" in res else ""))
    stats = {load: one_run(cleanup, a, rabbit, url, counts.get(load, a.count), rate, raw, True, stats_pass=True)
             for load, (rate, raw) in loads.items()}

    print(f"\n### RabbitMQ: oslo.messaging casts, publisher + consumer (acks), {fmt(a.count)} messages per run "
          f"(py-amqp: {fmt(a.count // 4)}) x {a.rounds} rounds, medians (spread min/max vs median)\n")
    rows = []
    for load in loads:
        base = median([x["cpu_us_per_msg"] for x in results[(load, "untraced")]])
        for sc in names:
            runs = results[(load, sc)]
            rate = [x["rate"] for x in runs]
            prate = [x["publish_rate"] for x in runs]
            cpu = [x["cpu_us_per_msg"] for x in runs]
            exact = "" if sc == "untraced" else ("yes" if all(x["exact"] for x in runs) else "NO")
            rows.append([load, sc, f"{fmt(median(rate))} ({spread(rate)})", fmt(median(prate)),
                         f"{median(cpu):.1f} ({spread(cpu)})",
                         "" if sc == "untraced" else f"{median(cpu) - base:+.1f}", exact])
    print(table(["load", "scenario", "messages/s (end to end)", "published/s", "pub+consumer CPU µs/msg",
                 "added CPU µs/msg", "exact, 0 lost"], rows))
    print("\nProgram time per message (one traced run per load with bpf_stats on; every run of scalp-bpf's "
          "programs on the machine, RabbitMQ's syscalls included, divided by the messages):\n")
    prow = []
    for load, x in stats.items():
        by_name, n = x["programs"], x["count"]
        runs = sum(r for r, _ in by_name.values())
        ns = sum(t for _, t in by_name.values())
        top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:3]
        prow.append([load, fmt(x["rate"]), f"{ns / n:,.0f} ns", f"{runs / n:.1f}", f"{x['traced_syscalls'] / n:.1f}",
                     ", ".join(f"{k} {t / max(r, 1):.0f} ns x{r / n:.1f}" for k, (r, t) in top)])
    print(table(["load", "messages/s", "program ns/message", "program runs/message", "traced syscalls/message",
                 "top programs (mean ns x runs/message)"], prow))
    traced = [x for (load, sc), runs in results.items() if sc == "traced" for x in runs] + list(stats.values())
    bad = [x for x in traced if not x["exact"]]
    ok = [x for x in traced if x["exact"]]
    print(f"\nTraced runs exact with 0 lost: {len(ok)} of {len(traced)}; highest rate among them: "
          f"{fmt(max((x['rate'] for x in ok), default=0))} messages/s")
    if bad:
        print(f"Runs with a difference or a loss: {[(round(x['rate']), x.get('drops')) for x in bad]}")
    return not bad


if __name__ == "__main__":
    main_guard(main)
