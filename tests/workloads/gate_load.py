"""The load driver of the CI-gate tests: a time-bound load test over the three services of
gate_app.py, like a Rally or Locust job in CI.

    python gate_load.py --seconds 6 --seed 7 --catalog 8100 --orders 8101 --files 8102

Each service gets its own client thread that repeats a scenario (a user's visit: a fixed sequence
of requests plus a few random ones, with random ids) at a target pace of --rate × that service's
share. The shares vary from run to run: each is multiplied by a factor drawn uniformly from
[1 - jitter, 1 + jitter] (--jitter 0.2: ±20 %), seeded by --seed, as the mix between services of a
real load test shifts with timing. One connection per request (uWSGI's http-socket closes after
each response). Prints what it did as JSON: {"seed", "factors", "requests": {service: {"METHOD
route": count}}}.
"""
import argparse
import json
import random
import socket
import sys
import threading
import time

SHARES = {"catalog": 0.5, "orders": 0.25, "files": 0.25}


def catalog(rng):
    """Eleven requests on ten routes, plus random extra views and searches."""
    p, c = rng.randint(1, 200), rng.randint(1, 10)
    steps = [("GET", "/products", None), ("GET", f"/products/{p}", None),
             ("GET", f"/products/{rng.randint(1, 200)}", None), ("GET", f"/products/{p}/reviews", None),
             ("POST", f"/products/{p}/reviews", {"stars": rng.randint(1, 5), "body": "fine"}),
             ("GET", f"/categories/{c}", None), ("GET", f"/categories/{c}/products", None),
             ("GET", f"/search?q={rng.randint(1, 99)}", None), ("GET", f"/stock/{p}", None),
             ("PUT", f"/stock/{p}", {"delta": rng.choice((-1, 1))}), ("GET", "/health", None)]
    if rng.random() < 0.5:
        steps.append(("GET", f"/products/{rng.randint(1, 200)}", None))
    if rng.random() < 0.3:
        steps.append(("GET", f"/search?q={rng.randint(1, 99)}", None))
    return steps


def orders(rng):
    o, cust = rng.randint(1, 100), rng.randint(1, 50)
    items = [rng.randint(1, 200) for _ in range(rng.randint(1, 3))]
    return [("POST", "/orders", {"customer": cust, "items": items}), ("GET", f"/orders/{o}", None),
            ("GET", f"/orders/{rng.randint(1, 100)}", None), ("GET", f"/orders?customer={cust}", None),
            ("PATCH", f"/orders/{o}", {"status": rng.choice(("seen", "paid"))}), ("GET", f"/customers/{cust}", None)]


def files(rng):
    b = rng.randint(1, 100)
    steps = [("PUT", f"/blobs/{b}", b"x" * rng.choice((4096, 8192, 16384))), ("GET", f"/blobs/{b}", None),
             ("GET", f"/blobs/{rng.randint(1, 100)}/meta", None), ("GET", "/blobs", None),
             ("POST", "/journal", b"record " + str(b).encode())]
    if rng.random() < 0.5:
        steps.append(("GET", f"/blobs/{rng.randint(1, 100)}", None))
    return steps


SCENARIOS = {"catalog": catalog, "orders": orders, "files": files}


def request(port, method, path, body):
    """One request on its own connection; returns the status."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    body = body or b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n")
    head += "Content-Type: application/json\r\n\r\n" if body[:1] == b"{" else "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode() + body)
        data = b""
        while True:
            more = s.recv(65536)
            if not more:
                break
            data += more
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0


def route_of(path):
    return "/".join("{id}" if part.isdigit() else part for part in path.split("?")[0].split("/"))


def drive(service, port, rate, deadline, rng, counts, failures):
    """Runs the service's scenario at `rate` requests/s until the deadline."""
    gap, at = 1.0 / rate, time.monotonic()
    while True:
        for method, path, body in SCENARIOS[service](rng):
            now = time.monotonic()
            if now >= deadline:
                return
            if at > now:
                time.sleep(at - now)
            at = max(at + gap, time.monotonic() - 5 * gap)  # no burst to catch up after a stall
            try:
                status = request(port, method, path, body)
            except OSError:
                status = 0
            key = f"{method} {route_of(path)}"
            counts[key] = counts.get(key, 0) + 1
            if not 200 <= status < 300:
                failures.append((key, status))


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--seconds", type=float, required=True)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--rate", type=float, default=400.0, help="requests/s over all services")
    a.add_argument("--jitter", type=float, default=0.2)
    for s in SHARES:
        a.add_argument(f"--{s}", type=int, required=True, help=f"the {s} service's port")
    args = a.parse_args()
    rng = random.Random(args.seed)
    factors = {s: rng.uniform(1 - args.jitter, 1 + args.jitter) for s in SHARES}
    deadline = time.monotonic() + args.seconds
    counts = {s: {} for s in SHARES}
    failures = []
    threads = [threading.Thread(target=drive, args=(s, getattr(args, s), args.rate * SHARES[s] * factors[s],
                                                    deadline, random.Random(rng.random()), counts[s], failures))
               for s in SHARES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"seed": args.seed, "factors": factors, "requests": counts, "failures": failures[:20]},
              sys.stdout)
    print()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
