"""A fast AMQP 0-9-1 publisher and consumer for the RPC benchmark, with py-amqp (the library under
kombu and oslo.messaging's rabbit driver). Messages are oslo.messaging casts as the rabbit driver
sends them (the `oslo.message` JSON envelope, application/json, to a topic exchange), so that a
tracer reads each as an RPC cast of method `echo`.

    amqp_load.py consume --url amqp://u:p@127.0.0.1:5672/ --count N
        declares the exchange and queue, consumes with a prefetch window and acks every message
        (as oslo.messaging does); prints "ready PID", then, when N messages have arrived, one JSON
        line: received, the monotonic time of the first and last, its own CPU seconds.
    amqp_load.py publish --url … --count N [--rate R]
        prints "ready PID", waits for a line on stdin, then publishes N messages, at R per second
        (0: as fast as it can); prints one JSON line: published, start and end times, CPU seconds.

Both keep one connection opened before "ready" (a tracer started then picks it up mid-stream).
"""
import argparse
import json
import os
import sys
import time
import urllib.parse
import uuid

import amqp

EXCHANGE, QUEUE = "scalp_bench", "scalp_bench.echo"


def connect(url):
    u = urllib.parse.urlparse(url)
    conn = amqp.Connection(host=f"{u.hostname}:{u.port or 5672}", userid=u.username, password=u.password,
                           virtual_host="/")
    conn.connect()
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, "topic", durable=False, auto_delete=False)
    ch.queue_declare(QUEUE, durable=False, auto_delete=False)
    ch.queue_bind(QUEUE, EXCHANGE, QUEUE)
    return conn, ch


def cpu():
    t = os.times()
    return t.user + t.system


def body(i):
    msg = {"method": "echo", "args": {"value": f"v{i}"}, "namespace": None, "version": "1.0",
           "_unique_id": uuid.uuid4().hex, "_context_request_id": f"req-{uuid.uuid4()}",
           "_context_project_id": "bench", "_context_user_id": "bench"}
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(msg)})


def publish(a):
    conn, ch = connect(a.url)
    bodies = [body(i) for i in range(64)]
    print("ready", os.getpid(), flush=True)
    sys.stdin.readline()
    c0, t0 = cpu(), time.monotonic()
    period = 1.0 / a.rate if a.rate else 0.0
    for i in range(a.count):
        if period:
            # Paced in bursts of 16 so that the sleeps stay coarse.
            if i % 16 == 0:
                wait = t0 + i * period - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        ch.basic_publish(amqp.Message(bodies[i % 64], content_type="application/json", content_encoding="utf-8"),
                         exchange=EXCHANGE, routing_key=QUEUE)
    t1 = time.monotonic()
    out = {"published": a.count, "start": t0, "end": t1, "cpu_s": cpu() - c0}
    conn.close()
    print(json.dumps(out), flush=True)


def consume(a):
    conn, ch = connect(a.url)
    ch.basic_qos(0, a.prefetch, False)
    state = {"n": 0, "first": None, "last": None}

    def on_message(msg):
        if state["first"] is None:
            state["first"] = time.monotonic()
            state["cpu0"] = cpu()
        ch.basic_ack(msg.delivery_tag)
        state["n"] += 1
        state["last"] = time.monotonic()

    ch.basic_consume(QUEUE, callback=on_message, no_ack=False)
    print("ready", os.getpid(), flush=True)
    c0 = cpu()
    while state["n"] < a.count:
        try:
            # The publisher may start long after this is ready: the gap limit runs from the first.
            conn.drain_events(timeout=a.timeout if state["n"] else 600)
        except TimeoutError:  # socket.timeout
            break
    out = {"received": state["n"], "first": state["first"], "last": state["last"], "cpu_s": cpu() - c0}
    conn.close()
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["publish", "consume"])
    p.add_argument("--url", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--prefetch", type=int, default=100)
    p.add_argument("--timeout", type=float, default=30, help="consumer: give up after this long without a message (600 s before the first)")
    a = p.parse_args()
    publish(a) if a.mode == "publish" else consume(a)


if __name__ == "__main__":
    main()
