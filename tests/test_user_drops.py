"""Losses the parsers count in user space: a traced HTTP server that leaves requests unanswered
and answers one request twice. The client knows exactly what it sent and what came back."""
import json
import socket
import subprocess

from conftest import PYTHON, Scalp, rows
from test_map_drops import drops

# A server that, per connection, reads one request and then: "drop" closes without answering,
# "twice" sends two responses (the second answers nothing). Prints what it did.
SERVER = r"""
import json, os, socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print("ready", os.getpid(), srv.getsockname()[1], flush=True)
plan = sys.stdin.readline().split()
done = {"drop": 0, "twice": 0}
ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
for what in plan:
    c, _ = srv.accept()
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += c.recv(4096)
    if what == "twice":
        c.sendall(ok)
        c.sendall(ok)
        c.shutdown(socket.SHUT_WR)
        while c.recv(4096):
            pass
    c.close()
    done[what] += 1
print(json.dumps(done), flush=True)
sys.stdin.readline()
"""


def test_unanswered_requests_and_unasked_responses_are_counted(out):
    plan = ["drop", "twice"] * 5 + ["drop"] * 3
    work = subprocess.Popen([PYTHON, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        _, pid, port = work.stdout.readline().split()
        pid = int(pid)
        scalp = Scalp(out, "--pid", pid, "--interval", "200ms", "--tracers", "syscalls,http").wait_ready()
        work.stdin.write(" ".join(plan) + "\n")
        work.stdin.flush()
        answers = []
        for i, _ in enumerate(plan):
            with socket.create_connection(("127.0.0.1", int(port))) as c:
                c.sendall(f"GET /item/{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                got = b""
                while chunk := c.recv(4096):
                    got += chunk
            answers.append(got.count(b"HTTP/1.1 200 OK"))
        did = json.loads(work.stdout.readline())
        work.stdin.close()
        assert work.wait(60) == 0
        assert scalp.wait() == 0, scalp.stderr
    finally:
        work.kill()
    unanswered, twice = plan.count("drop"), plan.count("twice")
    assert did == {"drop": unanswered, "twice": twice}
    assert answers == [0 if p == "drop" else 2 for p in plan]
    served = [r for r in rows(out, "http_requests", pid) if r["direction"] == "server"]
    # Each answered request once; the unanswered ones are drops, not rows.
    assert sum(r["calls"] for r in served) == twice, served
    assert {r["http_response_status_code"] for r in served} == {200}
    assert drops(out) == {("http", "request_without_response"): unanswered,
                          ("http", "response_without_request"): twice}
