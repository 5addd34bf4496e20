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

With --raw, both still connect, declare and subscribe with py-amqp, then use its socket directly:
the publisher writes --batch messages (pre-encoded method, header and body frames) per send, the
consumer reads --recv-bytes per receive and acks every --prefetch/2 deliveries at once (multiple): the
same frames on the wire at rates py-amqp's frame-per-read loop cannot reach.

Both keep one connection opened before "ready" (a tracer started then picks it up mid-stream).
"""
import argparse
import json
import os
import resource
import socket
import struct
import sys
import time
import urllib.parse
import uuid

import amqp

EXCHANGE, QUEUE = "scalp_bench", "scalp_bench.echo"


def connect(url):
    u = urllib.parse.urlparse(url)
    # py-amqp sets TCP_USER_TIMEOUT to 1 s: when the broker applies flow control (stops reading
    # a publisher faster than its consumers) the connection would be aborted. 0: the system's.
    conn = amqp.Connection(host=f"{u.hostname}:{u.port or 5672}", userid=u.username, password=u.password,
                           virtual_host="/", socket_settings={socket.TCP_USER_TIMEOUT: 0})
    conn.connect()
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, "topic", durable=False, auto_delete=False)
    ch.queue_declare(QUEUE, durable=False, auto_delete=False)
    ch.queue_bind(QUEUE, EXCHANGE, QUEUE)
    return conn, ch


def cpu():
    """CPU seconds of this process (getrusage: to the microsecond, unlike os.times' ticks)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def body(i):
    msg = {"method": "echo", "args": {"value": f"v{i}"}, "namespace": None, "version": "1.0",
           "_unique_id": uuid.uuid4().hex, "_context_request_id": f"req-{uuid.uuid4()}",
           "_context_project_id": "bench", "_context_user_id": "bench"}
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(msg)})


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def shortstr(s):
    b = s.encode()
    return bytes([len(b)]) + b


def raw_message(channel, body_text):
    """Basic.Publish, its content header (content-type, content-encoding) and one body frame."""
    body = body_text.encode()
    method = struct.pack(">HHH", 60, 40, 0) + shortstr(EXCHANGE) + shortstr(QUEUE) + b"\x00"
    header = struct.pack(">HHQH", 60, 0, len(body), 0xC000) + shortstr("application/json") + shortstr("utf-8")
    return frame(1, channel, method) + frame(2, channel, header) + frame(3, channel, body)


def publish_raw(a, conn, ch):
    encoded = [raw_message(ch.channel_id, body(i)) for i in range(64)]
    sock = conn.transport.sock
    print("ready", os.getpid(), flush=True)
    sys.stdin.readline()
    c0, t0 = cpu(), time.monotonic()
    period = 1.0 / a.rate if a.rate else 0.0
    i = 0
    while i < a.count:
        n = min(a.batch, a.count - i)
        if period:
            wait = t0 + i * period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        sock.sendall(b"".join(encoded[(i + k) % 64] for k in range(n)))
        i += n
    t1 = time.monotonic()
    out = {"published": a.count, "start": t0, "end": t1, "cpu_s": cpu() - c0}
    conn.close()
    print(json.dumps(out), flush=True)


def consume_raw(a, conn, ch):
    sock = conn.transport.sock
    print("ready", os.getpid(), flush=True)
    c0 = cpu()
    buf, n, first, last, unacked, tag = b"", 0, None, None, 0, 0
    sock.settimeout(600)
    while n < a.count:
        try:
            data = sock.recv(a.recv_bytes)
        except socket.timeout:
            break
        if not data:
            break
        sock.settimeout(a.timeout)
        buf += data
        at = 0
        while len(buf) - at >= 8:
            kind, _, size = struct.unpack_from(">BHI", buf, at)
            if len(buf) - at < size + 8:
                break
            if kind == 1 and struct.unpack_from(">HH", buf, at + 7) == (60, 60):
                tag_at = at + 11 + 1 + buf[at + 11]  # after the consumer tag (shortstr)
                tag = struct.unpack_from(">Q", buf, tag_at)[0]
            elif kind == 3:
                n += 1
                unacked += 1
                last = time.monotonic()
                if first is None:
                    first, c0 = last, cpu()
            at += size + 8
        buf = buf[at:]
        if unacked >= a.prefetch // 2 or (n >= a.count and unacked):
            sock.sendall(frame(1, ch.channel_id, struct.pack(">HHQB", 60, 80, tag, 1)))
            unacked = 0
    out = {"received": n, "first": first, "last": last, "cpu_s": cpu() - c0}
    sock.settimeout(30)
    conn.close()
    print(json.dumps(out), flush=True)


def publish(a):
    conn, ch = connect(a.url)
    if a.raw:
        return publish_raw(a, conn, ch)
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
    if a.raw:
        return consume_raw(a, conn, ch)
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
    p.add_argument("--raw", action="store_true", help="batched frames on py-amqp's socket")
    p.add_argument("--batch", type=int, default=32, help="--raw publisher: messages per send")
    p.add_argument("--recv-bytes", type=int, default=16384, help="--raw consumer: bytes per receive")
    p.add_argument("--timeout", type=float, default=30, help="consumer: give up after this long without a message (600 s before the first)")
    a = p.parse_args()
    publish(a) if a.mode == "publish" else consume(a)


if __name__ == "__main__":
    main()
