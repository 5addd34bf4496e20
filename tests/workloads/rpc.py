"""A known mix of oslo.messaging traffic through RabbitMQ with the rabbit driver (kombu + py-amqp),
as OpenStack services make it: an RPC server process with two methods (`echo`, `divide`; divide
by zero raises, so the caller gets a RemoteError) and a notification listener, and a client
process making `call`s and `cast`s on both methods and sending notifications.

    rpc.py run --url rabbit://u:p@127.0.0.1:5672/ [--calls 20 --failing 3 --casts 5 --notifications 2]

`run` starts the server as a child process (`rpc.py server`), waits until it listens, then is the
client itself; when the casts and notifications have all been handled by the server it stops it
and prints one JSON line: what the client did (per method and kind), what the server handled,
and what RabbitMQ should have counted (`publishes`: every message published by either side). Two
processes, so that a tracer sees one as the client and the other as the server.
With --hold the client connects first (one warm-up call, reported apart as `warmup`), prints
"ready PID" and waits for a line on stdin: its connections exist before tracing starts.
"""
import argparse
import json
import os
import subprocess
import sys
import time

TOPIC = "scalp_rpc"
SERVER = "scalp-server"
NOTIFY_TOPIC = "scalp_notifications"
PUBLISHER = "scalp.workload"


_parsed = []


def transport(url, notification=False):
    import oslo_messaging
    from oslo_config import cfg
    # The global CONF, as services use it: oslo.messaging registers some options (its tracing
    # group) only there.
    conf = cfg.CONF
    if not _parsed:
        conf([], project="scalp", default_config_files=[])
        _parsed.append(True)
    if notification:
        return oslo_messaging.get_notification_transport(conf, url=url)
    return oslo_messaging.get_rpc_transport(conf, url=url)


class DivisionRefused(Exception):
    pass


class Endpoint:
    def __init__(self, handled):
        self.handled = handled

    def _count(self, method, ctxt):
        kind = "call" if ctxt.get("scalp_kind") == "call" else "cast"
        self.handled.bump(f"{method}.{kind}")

    def echo(self, ctxt, value):
        self._count("echo", ctxt)
        return value

    def divide(self, ctxt, a, b):
        self._count("divide", ctxt)
        if b == 0:
            # Not a builtin exception (oslo.messaging re-raises those as themselves): the caller
            # gets a RemoteError, as for most service exceptions.
            raise DivisionRefused(f"{a}/0")
        return a / b


class NotificationEndpoint:
    def __init__(self, handled):
        self.handled = handled

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.handled.bump(f"notification.{event_type}")


def server(a):
    """Serves until stdin closes; writes what it handled to --state after every message."""
    import threading

    import oslo_messaging
    handled = {}
    lock = threading.Lock()

    class Recording(dict):
        def bump(self, k):
            """One more of `k`, read and written under the lock: the threading executor handles
            casts concurrently, and an unlocked get-then-set lost counts."""
            with lock:
                super().__setitem__(k, self.get(k, 0) + 1)
                tmp = a.state + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(dict(self), f)
                os.replace(tmp, a.state)

    handled = Recording()
    rpc = oslo_messaging.get_rpc_server(
        transport(a.url), oslo_messaging.Target(topic=TOPIC, server=SERVER), [Endpoint(handled)],
        executor="threading")
    listener = oslo_messaging.get_notification_listener(
        transport(a.url, notification=True), [oslo_messaging.Target(topic=NOTIFY_TOPIC)],
        [NotificationEndpoint(handled)], executor="threading")
    rpc.start()
    listener.start()
    print("listening", flush=True)
    sys.stdin.read()
    for s in (rpc, listener):
        s.stop()
        s.wait()


def client(a):
    import oslo_messaging
    rpc = oslo_messaging.get_rpc_client(transport(a.url), oslo_messaging.Target(topic=TOPIC), timeout=30)
    notifier = oslo_messaging.Notifier(transport(a.url, notification=True), publisher_id=PUBLISHER,
                                       driver="messaging", topics=[NOTIFY_TOPIC])
    did = {"calls": {}, "casts": {}, "errors": {}, "notifications": {}, "warmup": 0}

    def bump(kind, name):
        did[kind][name] = did[kind].get(name, 0) + 1

    if a.hold:
        rpc.call({"scalp_kind": "call"}, "echo", value="warm-up")
        did["warmup"] += 1
        print("ready", os.getpid(), flush=True)
        sys.stdin.readline()
    for i in range(a.calls):
        assert rpc.call({"scalp_kind": "call"}, "echo", value=f"v{i}") == f"v{i}"
        bump("calls", "echo")
    for i in range(a.calls):
        b = 0 if i < a.failing else 2
        bump("calls", "divide")
        try:
            rpc.call({"scalp_kind": "call"}, "divide", a=i, b=b)
        except oslo_messaging.RemoteError as e:
            assert e.exc_type == "DivisionRefused", e.exc_type
            bump("errors", "divide")
    for i in range(a.casts):
        rpc.cast({"scalp_kind": "cast"}, "echo", value=f"c{i}")
        bump("casts", "echo")
        rpc.cast({"scalp_kind": "cast"}, "divide", a=i, b=1)
        bump("casts", "divide")
    for i in range(a.notifications):
        event = "scalp.test.start" if i % 2 == 0 else "scalp.test.end"
        notifier.info({}, event, {"i": i})
        bump("notifications", event)
    return did


def run(a):
    state = a.state or f"/tmp/scalp-rpc-{os.getpid()}.json"
    if os.path.exists(state):
        os.unlink(state)
    srv = subprocess.Popen([sys.executable, __file__, "server", "--url", a.url, "--state", state],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if srv.stdout.readline().strip() != "listening":
        sys.exit("rpc.py: the server did not start")
    did = client(a)
    calls = sum(did["calls"].values()) + did["warmup"]
    expected = {f"{m}.call": n for m, n in did["calls"].items()}
    expected["echo.call"] = expected.get("echo.call", 0) + did["warmup"]
    expected.update({f"{m}.cast": n for m, n in did["casts"].items()})
    expected.update({f"notification.{e}": n for e, n in did["notifications"].items()})
    deadline = time.monotonic() + 60
    handled = {}
    while time.monotonic() < deadline:
        try:
            with open(state) as f:
                handled = json.load(f)
        except (OSError, ValueError):
            pass
        if handled == expected:
            break
        time.sleep(0.05)
    srv.stdin.close()
    srv.wait(timeout=60)
    os.unlink(state)
    did["server"] = {"pid": srv.pid, "handled": handled}
    did["client_pid"] = os.getpid()
    # One message per call, cast and notification from the client, one reply per call from the
    # server: what RabbitMQ's messages_received_total should count.
    did["publishes"] = calls + sum(did["casts"].values()) + sum(did["notifications"].values()) + calls
    print(json.dumps(did), flush=True)
    if handled != expected:
        sys.exit(f"rpc.py: the server handled {handled}, expected {expected}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["run", "server"])
    p.add_argument("--url", required=True)
    p.add_argument("--calls", type=int, default=20, help="calls per method")
    p.add_argument("--failing", type=int, default=3, help="of the divide calls, how many raise")
    p.add_argument("--casts", type=int, default=5, help="casts per method")
    p.add_argument("--notifications", type=int, default=2)
    p.add_argument("--state", help="where the server writes what it handled")
    p.add_argument("--hold", action="store_true")
    a = p.parse_args()
    server(a) if a.mode == "server" else run(a)


if __name__ == "__main__":
    main()
