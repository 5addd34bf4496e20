"""RPC over AMQP (RabbitMQ from Debian, oslo.messaging from PyPI): a client process and a server
process doing a known number of calls and casts on two methods (some raising), and
notifications; every call is paired with its reply, counts per method and kind are exact, and
RabbitMQ's own counters agree on the publishes."""
import collections
import json
import subprocess

from conftest import PYTHON, SCALP, WORKLOADS, Held, Scalp, rows, run_json

RPC = str(WORKLOADS / "rpc.py")


def by(rpc_rows, direction, field="calls"):
    out = collections.Counter()
    for r in rpc_rows:
        if r["direction"] == direction:
            out[(r["rpc_kind"], r["rpc_method"])] += r[field]
    return {k: v for k, v in out.items() if v}


def check(rpc_rows, did, factor_server=True):
    calls = {("call", m): n for m, n in did["calls"].items()}
    casts = {("cast", m): n for m, n in did["casts"].items()}
    notes = {("notification", m): n for m, n in did["notifications"].items()}
    # The client: its calls (each paired with the delivery of its reply), casts, notifications.
    assert by(rpc_rows, "client") == {**calls, **casts, **notes}
    assert by(rpc_rows, "client", "replied_calls") == calls
    assert by(rpc_rows, "client", "errors") == {("call", m): n for m, n in did["errors"].items()}
    assert not by(rpc_rows, "client", "timeouts")
    # The server: the calls it was delivered (each paired with its reply's publish), the casts
    # and the notifications its listener got.
    assert by(rpc_rows, "server") == {**calls, **casts, **notes}
    assert by(rpc_rows, "server", "replied_calls") == calls
    assert by(rpc_rows, "server", "errors") == {("call", m): n for m, n in did["errors"].items()}
    for r in rpc_rows:
        if r["replied_calls"]:
            assert r["duration_ns_sum"] > 0 and sum(r["duration_histogram"]) == r["replied_calls"]
    # Every publish: the client's calls, casts and notifications, and the server's replies.
    client_publishes = sum(n for (kind, _), n in by(rpc_rows, "client").items())
    return client_publishes + sum(by(rpc_rows, "server", "replied_calls").values())


def test_calls_casts_notifications_and_replies_are_exact(rabbitmq, out):
    before = rabbitmq.counters()
    r = subprocess.run([SCALP, "run", "--output", str(out), "--interval", "200ms", "--rpc-port",
                        str(rabbitmq.port), "--", PYTHON, RPC, "run", "--url", rabbitmq.url, "--calls", "12",
                        "--failing", "4", "--casts", "3", "--notifications", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    did = json.loads(r.stdout.strip().splitlines()[-1])
    delta = rabbitmq.counters()["messages_received_total"] - before["messages_received_total"]
    rpc_rows = rows(out, "rpc_calls")
    publishes = check(rpc_rows, did)
    assert publishes == did["publishes"] == delta
    # Replies go to a reply_<uuid> queue: one routing key, templated.
    keys = {r["messaging_rabbitmq_routing_key"] for r in rpc_rows}
    assert not any(k.startswith("reply_") and k != "reply_{id}" for k in keys), keys
    drops = {(d["tracer"], d["reason"]): d["count"] for d in run_json(out)["drops"]}
    assert not {k: v for k, v in drops.items() if k[0] in ("rpc", "sockets")}, drops


def test_connections_opened_before_tracing_are_picked_up_mid_stream(rabbitmq, out):
    held = Held("run", "--url", rabbitmq.url, "--calls", 6, "--failing", 2, "--casts", 2,
                "--notifications", 2, script=RPC)
    try:
        scalp = Scalp(out, "--pid", held.pid, "--interval", "200ms", "--rpc-port", rabbitmq.port).wait_ready()
        held.go()
        did = json.loads(held.readline())
        assert held.finish() == 0
        assert scalp.stop() == 0, scalp.stderr
    finally:
        held.kill()
    rpc_rows = rows(out, "rpc_calls")
    check(rpc_rows, did)
