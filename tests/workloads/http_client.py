"""A known mix of HTTP requests to wsgi_app over raw sockets, so that the bytes each request and
response took on the wire are known exactly; prints one JSON document of what it did.

    python http_client.py --port 8080 [--keepalive 100] [--upload-bytes 1048576] [--expect-continue]
                          [--chunked-upload 1] [--create 5 --get 20 …]

Requests are HTTP/1.1; a connection is reused while the server keeps it open (HTTP/1.1 response,
no "Connection: close", body framed by length or chunks), else the next request opens another.
The mix (counts are arguments): POST /items (201), GET /items/{id} of those (200) and of unknown
ids (404), HEAD /items/{id} (200), GET of an unknown path (404), GET /boom (500), GET /stream
(a response without Content-Length: chunked, or until the close), POST /upload with a large body
(Content-Length, or chunked; optionally Expect: 100-continue), then --keepalive GETs that share
one connection when the server keeps connections alive.

Output: {"requests": [{"method", "route", "status", "calls", "request_bytes", "response_bytes",
"interim_bytes", "sql_statements"}...], "connections": N, "keepalive": {"requests": N,
"connections": N}}. Bytes are on the wire, heads and chunk framing included; response_bytes
include interim responses (100 Continue), also counted apart in interim_bytes.
"""
import argparse
import json
import os
import select
import socket
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsgi_app import sql_statements  # noqa: E402


class Response:
    def __init__(self, status, head, body, wire, keep):
        self.status, self.head, self.body, self.wire, self.keep = status, head, body, wire, keep


class Client:
    def __init__(self, host, port, unix=None):
        self.host, self.port, self.unix = host, port, unix
        self.sock, self.buf = None, b""
        self.connections = 0
        self.reused = False
        self.rows = {}

    def connect(self):
        if self.unix:
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.unix)
        else:
            s = socket.create_connection((self.host, self.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(30)
        self.sock, self.buf = s, b""
        self.connections += 1
        self.reused = False

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self):
        while b"\n" not in self.buf:
            self.fill()
        i = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_head(self):
        lines = [self.line()]
        while lines[-1] not in (b"\r\n", b"\n"):
            lines.append(self.line())
        raw = b"".join(lines)
        status_line = lines[0].decode().split(" ", 2)
        headers = {}
        for ln in lines[1:-1]:
            k, _, v = ln.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        return status_line[0], int(status_line[1]), headers, raw

    def read_response(self, method):
        """Reads one response (interim ones included); returns it with its wire size."""
        wire = 0
        while True:
            version, status, headers, raw = self.read_head()
            wire += len(raw)
            if not (100 <= status < 200):
                break
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        body = b""
        if method == "HEAD" or status in (204, 304):
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = self.line()
                wire += len(size_line)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        t = self.line()
                        wire += len(t)
                        if t in (b"\r\n", b"\n"):
                            break
                    break
                body += self.take(size)
                wire += size + len(self.take(2))
        elif "content-length" in headers:
            body = self.take(int(headers["content-length"]))
            wire += len(body)
        else:
            # Delimited by the close.
            keep = False
            try:
                while True:
                    self.fill()
            except EOFError:
                pass
            body, self.buf = self.buf, b""
            wire += len(body)
        return Response(status, headers, body, wire, keep)

    def request(self, method, path, route, body=None, headers=(), chunked=False, expect=False):
        """Sends one request, reads its response, records both under (method, route, status).
        A kept connection the server closed meanwhile is replaced, as HTTP clients do (uWSGI's
        http-socket answers HTTP/1.1 without "Connection: close", then closes)."""
        if self.sock is not None and select.select([self.sock], [], [], 0)[0]:
            self.close()  # readable between responses: the server closed it
        if self.sock is None:
            self.connect()
        try:
            return self._request(method, path, route, body, headers, chunked, expect)
        except (EOFError, ConnectionResetError, BrokenPipeError):
            if not (self.reused and self.buf == b""):
                raise
            # Closed before answering this request: the request never reached the application.
            self.close()
            self.connect()
            return self._request(method, path, route, body, headers, chunked, expect)

    def _request(self, method, path, route, body, headers, chunked, expect):
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers]
        payload = b""
        if body is not None:
            if chunked:
                lines.append("Transfer-Encoding: chunked")
                step = 65536
                parts = [b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                         for i in range(0, len(body), step)]
                payload = b"".join(parts) + b"0\r\n\r\n"
            else:
                lines.append(f"Content-Length: {len(body)}")
                payload = body
            if expect:
                lines.append("Expect: 100-continue")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        interim = 0
        if expect and payload:
            self.sock.sendall(head)
            # Wait for the 100 Continue (servers that ignore Expect get the body after 1 s).
            self.sock.settimeout(1)
            try:
                while b"\r\n\r\n" not in self.buf:
                    self.fill()
                if self.buf.startswith(b"HTTP/1.1 100"):
                    _, _, _, raw = self.read_head()
                    interim = len(raw)
            except socket.timeout:
                pass
            self.sock.settimeout(30)
            self.sock.sendall(payload)
        else:
            self.sock.sendall(head + payload)
        resp = self.read_response(method)
        key = (method, route, resp.status)
        row = self.rows.setdefault(key, {"method": method, "route": route, "status": resp.status, "calls": 0,
                                         "request_bytes": 0, "response_bytes": 0, "interim_bytes": 0,
                                         "sql_statements": 0})
        row["calls"] += 1
        row["request_bytes"] += len(head) + len(payload)
        row["response_bytes"] += resp.wire + interim
        row["interim_bytes"] += interim
        row["sql_statements"] += sql_statements(method, route, resp.status)
        if not resp.keep:
            self.close()
        self.reused = True
        return resp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--unix", help="a Unix socket instead of host:port")
    p.add_argument("--create", type=int, default=5)
    p.add_argument("--get", type=int, default=20)
    p.add_argument("--missing", type=int, default=3)
    p.add_argument("--head", type=int, default=2)
    p.add_argument("--not-found", type=int, default=4)
    p.add_argument("--boom", type=int, default=3)
    p.add_argument("--stream", type=int, default=2)
    p.add_argument("--upload", type=int, default=1)
    p.add_argument("--upload-bytes", type=int, default=1 << 20)
    p.add_argument("--chunked-upload", type=int, default=0, help="uploads sent with a chunked body")
    p.add_argument("--expect-continue", action="store_true", help="uploads ask for 100 Continue first")
    p.add_argument("--keepalive", type=int, default=100)
    a = p.parse_args()
    c = Client(a.host, a.port, a.unix)
    json_head = [("Content-Type", "application/json")]
    ids = []
    for i in range(a.create):
        r = c.request("POST", "/items", "/items", json.dumps({"name": f"item-{i}"}).encode(), json_head)
        assert r.status == 201, r.status
        ids.append(json.loads(r.body)["id"])
    for i in range(a.get):
        assert c.request("GET", f"/items/{ids[i % len(ids)]}", "/items/{id}").status == 200
    for _ in range(a.missing):
        assert c.request("GET", f"/items/{uuid.uuid4()}", "/items/{id}").status == 404
    for i in range(a.head):
        assert c.request("HEAD", f"/items/{ids[i % len(ids)]}?fields=all", "/items/{id}").status == 200
    for i in range(a.not_found):
        assert c.request("GET", f"/nothing/here?i={i}", "/nothing/here").status == 404
    for _ in range(a.boom):
        assert c.request("GET", "/boom", "/boom").status == 500
    for _ in range(a.stream):
        r = c.request("GET", "/stream", "/stream")
        assert r.status == 200 and len(r.body) == 40 * 1001, len(r.body)
    blob = bytes(range(256)) * (a.upload_bytes // 256) + b"x" * (a.upload_bytes % 256)
    for i in range(a.upload + a.chunked_upload):
        r = c.request("POST", "/upload", "/upload", blob, [("Content-Type", "application/octet-stream")],
                      chunked=i >= a.upload, expect=a.expect_continue)
        assert r.status == 200 and json.loads(r.body)["bytes"] == len(blob), r.body
    c.close()
    before = c.connections
    for i in range(a.keepalive):
        assert c.request("GET", f"/items/{ids[i % len(ids)]}", "/items/{id}").status == 200
    c.close()
    print(json.dumps({"requests": sorted(c.rows.values(), key=lambda r: (r["route"], r["method"], r["status"])),
                      "connections": c.connections,
                      "keepalive": {"requests": a.keepalive, "connections": c.connections - before}}))


if __name__ == "__main__":
    main()
