"""The RPC and cache test rigs, checked without scalp-bpf: the RabbitMQ and memcached servers of
tests/servers.py, and the workloads (workloads/rpc.py, workloads/cache.py) whose printed counts
the tracer's acceptance tests compare with. Here the servers' own counters must agree with what
the workloads say they did, so that a tracer test failing means the tracer is wrong."""
import json
import subprocess

from conftest import PYTHON, WORKLOADS, Held


def counter_delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in after}


def run_rpc(rabbitmq, *args):
    r = subprocess.run([PYTHON, str(WORKLOADS / "rpc.py"), "run", "--url", rabbitmq.url, *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_rabbitmq_counts_every_message_the_rpc_workload_says_it_published(rabbitmq):
    before = rabbitmq.counters()
    did = run_rpc(rabbitmq, "--calls", 12, "--failing", 4, "--casts", 3, "--notifications", 2)
    delta = counter_delta(before, rabbitmq.counters())
    assert did["calls"] == {"echo": 12, "divide": 12}
    assert did["errors"] == {"divide": 4}
    assert did["casts"] == {"echo": 3, "divide": 3}
    assert did["notifications"] == {"scalp.test.start": 1, "scalp.test.end": 1}
    # The server process handled exactly that (rpc.py fails otherwise; checked here too).
    assert did["server"]["handled"] == {"echo.call": 12, "divide.call": 12, "echo.cast": 3, "divide.cast": 3,
                                        "notification.scalp.test.start": 1, "notification.scalp.test.end": 1}
    # Calls, casts and notifications from the client, one reply per call from the server.
    assert did["publishes"] == 24 + 6 + 2 + 24
    assert delta["messages_received_total"] == did["publishes"]
    assert delta["messages_routed_total"] == did["publishes"]
    assert delta["messages_unroutable_dropped_total"] == 0
    assert delta["messages_unroutable_returned_total"] == 0
    # Every message reached a consumer and was acked: nothing left in the queues.
    assert delta["messages_delivered_total"] == did["publishes"]
    assert delta["messages_acknowledged_total"] == did["publishes"]
    queues = rabbitmq.queues()
    for q in ("scalp_rpc", "scalp_rpc.scalp-server", "scalp_notifications.info"):
        assert queues[q][0] == 0, queues
    # oslo.messaging replies through a reply_<uuid> queue of the caller's (not direct reply-to).
    assert any(q.startswith("reply_") for q in queues), queues


def test_rpc_workload_holds_its_connections_open_before_working(rabbitmq):
    held = Held("run", "--url", rabbitmq.url, "--calls", 3, "--failing", 1, "--casts", 1,
                "--notifications", 1, script=WORKLOADS / "rpc.py")
    try:
        # The warm-up call is done: its connections are up and its messages counted.
        connections = rabbitmq.ctl("list_connections", "-q", "--no-table-headers", "peer_port").split()
        assert len(connections) >= 4, connections
        before = rabbitmq.counters()
        held.go()
        did = json.loads(held.readline())
        assert held.finish() == 0
    finally:
        held.kill()
    delta = counter_delta(before, rabbitmq.counters())
    assert did["warmup"] == 1
    # What was published after "go": the total less the warm-up call and its reply.
    assert delta["messages_received_total"] == did["publishes"] - 2 == 6 + 2 + 1 + 6


def test_memcached_stats_agree_with_the_cache_workload(memcached):
    before = (memcached.stats(), memcached.stats(unix=True))
    r = subprocess.run([PYTHON, str(WORKLOADS / "cache.py"), "--port", str(memcached.port),
                        "--socket", str(memcached.socket), "--n", "10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    did = json.loads(r.stdout)
    after = (memcached.stats(), memcached.stats(unix=True))
    for i, transport in enumerate(("tcp", "unix")):
        delta = counter_delta(before[i], after[i])
        for k, v in did["stats"][transport].items():
            assert delta[k] == v, (transport, k, delta[k], v)
        # What a tracer must count: per key for gets (pymemcache's get_many is one command).
        gets = did[transport]["get"]
        assert gets["hits"] + gets["misses"] == delta["cmd_get"] - did[transport].get("mg", {}).get("calls", 0)
        assert gets["hits"] == delta["get_hits"] - did[transport].get("mg", {}).get("hits", 0)
        assert did[transport]["delete"]["hits"] == delta["delete_hits"] - did[transport].get("md", {}).get("hits", 0)
    assert did["tcp"]["get"] == {"calls": 20, "hits": 15, "misses": 9, "errors": 0}
    assert did["unix"]["get"] == {"calls": 16, "hits": 13, "misses": 7, "errors": 0}
    assert did["tcp"]["set"]["calls"] == 13 and did["unix"]["set"]["calls"] == 12


def test_cache_workload_holds_its_connections_open_before_working(memcached):
    held = Held("--port", memcached.port, "--socket", memcached.socket, "--n", 4, script=WORKLOADS / "cache.py")
    try:
        # Four connections (pymemcache over TCP and the socket, raw meta and binary) are up.
        assert memcached.stats()["curr_connections"] >= 4
        before = (memcached.stats(), memcached.stats(unix=True))
        held.go()
        did = json.loads(held.readline())
        assert held.finish() == 0
    finally:
        held.kill()
    after = (memcached.stats(), memcached.stats(unix=True))
    for i, transport in enumerate(("tcp", "unix")):
        delta = counter_delta(before[i], after[i])
        assert {k: delta[k] for k in did["stats"][transport]} == did["stats"][transport], transport
