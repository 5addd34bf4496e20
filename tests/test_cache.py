"""memcached (Debian) driven by pymemcache and raw meta/binary requests over TCP and a Unix
socket: calls, hits and misses per command exact, and memcached's own `stats` agree."""
import collections
import json
import subprocess

from conftest import PYTHON, SCALP, WORKLOADS, Held, Scalp, rows, run_json

CACHE = str(WORKLOADS / "cache.py")


def by_transport(cache_rows):
    out = {"tcp": collections.defaultdict(collections.Counter),
           "unix": collections.defaultdict(collections.Counter)}
    for r in cache_rows:
        c = out[r["network_transport"]][r["db_operation_name"]]
        for f in ("calls", "hits", "misses", "errors"):
            c[f] += r[f]
    return out


def check(cache_rows, did):
    seen = by_transport(cache_rows)
    for transport in ("tcp", "unix"):
        for command, want in did[transport].items():
            got = seen[transport][command]
            assert {f: got[f] for f in want} == want, (transport, command, dict(got), want)
        # Nothing counted that the workload did not do.
        assert set(seen[transport]) <= set(did[transport]), (transport, set(seen[transport]))


def test_commands_hits_and_misses_are_exact_over_tcp_and_unix(memcached, out):
    before = (memcached.stats(), memcached.stats(unix=True))
    r = subprocess.run([SCALP, "run", "--output", str(out), "--interval", "200ms", "--cache-port",
                        str(memcached.port), "--", PYTHON, CACHE, "--port", str(memcached.port),
                        "--socket", str(memcached.socket), "--n", "10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    did = json.loads(r.stdout)
    after = (memcached.stats(), memcached.stats(unix=True))
    cache_rows = rows(out, "cache_ops")
    check(cache_rows, did)
    # memcached's own counters: every get-family key and set, as traced.
    for i, transport in enumerate(("tcp", "unix")):
        delta = {k: after[i][k] - before[i].get(k, 0) for k in after[i]}
        traced = by_transport(cache_rows)[transport]
        gets = sum(traced[c]["hits"] + traced[c]["misses"] for c in ("get", "gets", "mg"))
        assert gets == delta["cmd_get"], (transport, gets, delta["cmd_get"])
        assert sum(traced[c]["hits"] for c in ("get", "gets", "mg")) == delta["get_hits"]
    drops = {(d["tracer"], d["reason"]): d["count"] for d in run_json(out)["drops"]}
    assert not {k: v for k, v in drops.items() if k[0] in ("cache", "sockets")}, drops


def test_connections_opened_before_tracing_are_picked_up(memcached, out):
    held = Held("--port", memcached.port, "--socket", memcached.socket, "--n", 6, script=CACHE)
    try:
        scalp = Scalp(out, "--pid", held.pid, "--interval", "200ms", "--cache-port", memcached.port).wait_ready()
        held.go()
        did = json.loads(held.readline())
        assert held.finish() == 0
        assert scalp.stop() == 0, scalp.stderr
    finally:
        held.kill()
    check(rows(out, "cache_ops"), did)
