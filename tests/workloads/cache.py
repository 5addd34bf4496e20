"""A known mix of memcached traffic, as Keystone and keystonemiddleware make it with pymemcache,
plus the meta and binary protocols through a plain socket (no Python client speaks those):

    cache.py --port 11211 --socket /path/memcached.sock [--n 10] [--hold]

over TCP (--port) and the Unix socket (--socket), each: sets (pymemcache's default noreply, and
with replies), gets that hit and miss, get_many over present and missing keys, deletes that hit
and miss, an add that is refused, incr; then, over TCP only, meta (mg/ms/md/mn, with and
without the quiet flag) and binary (set, get hit and miss, delete, getkq + noop) requests. Prints
one JSON line: per transport and command what a tracer should count (calls, hits, misses per
key, errors) and what memcached's own `stats` must have moved by (cmd_get, get_hits, …).
With --hold it connects first, prints "ready PID" and waits for a line on stdin.
"""
import argparse
import json
import os
import socket
import struct
import sys

from pymemcache.client.base import Client


def bump(table, command, calls=1, hits=0, misses=0, errors=0):
    t = table.setdefault(command, {"calls": 0, "hits": 0, "misses": 0, "errors": 0})
    t["calls"] += calls
    t["hits"] += hits
    t["misses"] += misses
    t["errors"] += errors


def add_stats(stats, **kw):
    for k, v in kw.items():
        stats[k] = stats.get(k, 0) + v


def pymemcache_mix(c, n, prefix, did, stats):
    keys = [f"{prefix}:k{i}" for i in range(n)]
    for i, k in enumerate(keys):  # noreply (pymemcache's default): no response comes
        c.set(k, f"value-{i}".encode(), expire=300)
        bump(did, "set")
    add_stats(stats, cmd_set=n)
    assert c.set(f"{prefix}:acked", b"x", noreply=False) is True
    bump(did, "set")
    add_stats(stats, cmd_set=1)
    for k in keys:
        assert c.get(k) is not None
        bump(did, "get", hits=1)
    for i in range(n // 2):
        assert c.get(f"{prefix}:missing{i}") is None
        bump(did, "get", misses=1)
    add_stats(stats, cmd_get=n + n // 2, get_hits=n, get_misses=n // 2)
    # One command for several keys: 3 present, 2 missing.
    many = keys[:3] + [f"{prefix}:nope1", f"{prefix}:nope2"]
    got = c.get_many(many)
    assert len(got) == 3, got
    bump(did, "get", hits=3, misses=2)
    add_stats(stats, cmd_get=5, get_hits=3, get_misses=2)
    assert c.add(keys[0], b"again", noreply=False) is False  # NOT_STORED
    bump(did, "add")
    add_stats(stats, cmd_set=1)
    c.set(f"{prefix}:counter", b"10", noreply=False)
    bump(did, "set")
    add_stats(stats, cmd_set=1)
    assert c.incr(f"{prefix}:counter", 5, noreply=False) == 15
    bump(did, "incr", hits=1)
    add_stats(stats, incr_hits=1)
    for k in keys[: n // 2]:
        assert c.delete(k, noreply=False) is True
        bump(did, "delete", hits=1)
    assert c.delete(f"{prefix}:missing0", noreply=False) is False
    bump(did, "delete", misses=1)
    add_stats(stats, delete_hits=n // 2, delete_misses=1)


def roundtrip(sock, request, until):
    sock.sendall(request)
    data = b""
    while not until(data):
        more = sock.recv(65536)
        if not more:
            raise RuntimeError("memcached closed the connection")
        data += more
    return data


def meta_mix(sock, prefix, did, stats):
    k = f"{prefix}:meta"
    assert roundtrip(sock, f"ms {k} 5 T300\r\nhello\r\n".encode(), lambda d: d.endswith(b"\r\n")) == b"HD\r\n"
    bump(did, "ms")
    r = roundtrip(sock, f"mg {k} v\r\n".encode(), lambda d: d.endswith(b"\r\n") and d.count(b"\r\n") >= 2)
    assert r == b"VA 5\r\nhello\r\n", r
    bump(did, "mg", hits=1)
    assert roundtrip(sock, f"mg {k}:nope v\r\n".encode(), lambda d: d.endswith(b"\r\n")) == b"EN\r\n"
    bump(did, "mg", misses=1)
    # Quiet mode: the miss says nothing; mn closes the batch. Two mg sent in one write.
    r = roundtrip(sock, f"mg {k}:q1 v q\r\nmg {k} v q\r\nmn\r\n".encode(), lambda d: d.endswith(b"MN\r\n"))
    assert r == b"VA 5\r\nhello\r\nMN\r\n", r
    bump(did, "mg", calls=2, hits=1, misses=1)
    bump(did, "mn")
    assert roundtrip(sock, f"md {k}\r\n".encode(), lambda d: d.endswith(b"\r\n")) == b"HD\r\n"
    bump(did, "md", hits=1)
    assert roundtrip(sock, f"md {k}\r\n".encode(), lambda d: d.endswith(b"\r\n")) == b"NF\r\n"
    bump(did, "md", misses=1)
    add_stats(stats, cmd_set=1, cmd_get=4, get_hits=2, get_misses=2, delete_hits=1, delete_misses=1)


def binary(opcode, key=b"", value=b"", extras=b"", opaque=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, len(body), opaque, 0) + body


def binary_responses(sock, count):
    """Reads `count` response packets; returns their (opcode, status, opaque)."""
    out, buf = [], b""
    while len(out) < count:
        while len(buf) < 24 or len(buf) < 24 + struct.unpack(">I", buf[8:12])[0]:
            more = sock.recv(65536)
            if not more:
                raise RuntimeError("memcached closed the connection")
            buf += more
        magic, op, _, _, _, status, total, opaque, _ = struct.unpack(">BBHBBHIIQ", buf[:24])
        assert magic == 0x81, buf[:24]
        out.append((op, status, opaque))
        buf = buf[24 + total:]
    return out


def binary_mix(sock, prefix, did, stats):
    k = f"{prefix}:bin".encode()
    set_extras = struct.pack(">II", 0, 300)
    sock.sendall(binary(0x01, k, b"binval", set_extras, opaque=1))
    assert binary_responses(sock, 1) == [(0x01, 0, 1)]
    bump(did, "set")
    sock.sendall(binary(0x00, k, opaque=2))
    assert binary_responses(sock, 1) == [(0x00, 0, 2)]
    bump(did, "get", hits=1)
    sock.sendall(binary(0x00, k + b":nope", opaque=3))
    assert binary_responses(sock, 1) == [(0x00, 1, 3)]
    bump(did, "get", misses=1)
    # getkq for a hit and a miss, then noop: only the hit and the noop answer.
    sock.sendall(binary(0x0D, k, opaque=4) + binary(0x0D, k + b":q", opaque=5) + binary(0x0A, opaque=6))
    assert binary_responses(sock, 2) == [(0x0D, 0, 4), (0x0A, 0, 6)]
    bump(did, "get", calls=2, hits=1, misses=1)
    bump(did, "noop")
    sock.sendall(binary(0x04, k, opaque=7))
    assert binary_responses(sock, 1) == [(0x04, 0, 7)]
    bump(did, "delete", hits=1)
    add_stats(stats, cmd_set=1, cmd_get=4, get_hits=2, get_misses=2, delete_hits=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--n", type=int, default=10, help="keys set and read per transport")
    p.add_argument("--hold", action="store_true")
    a = p.parse_args()
    prefix = f"scalp{os.getpid()}"
    tcp = Client(("127.0.0.1", a.port), connect_timeout=10, timeout=10)
    unix = Client(a.socket, connect_timeout=10, timeout=10)
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    raw_bin = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    if a.hold:
        tcp.version()
        unix.version()
        print("ready", os.getpid(), flush=True)
        sys.stdin.readline()
    out = {"pid": os.getpid(), "tcp": {}, "unix": {}, "stats": {"tcp": {}, "unix": {}}}
    pymemcache_mix(tcp, a.n, prefix + "t", out["tcp"], out["stats"]["tcp"])
    pymemcache_mix(unix, a.n, prefix + "u", out["unix"], out["stats"]["unix"])
    meta_mix(raw, prefix, out["tcp"], out["stats"]["tcp"])
    binary_mix(raw_bin, prefix, out["tcp"], out["stats"]["tcp"])
    for c in (tcp, unix):
        c.close()
    raw.close()
    raw_bin.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
