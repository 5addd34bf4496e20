"""HTTP and uwsgi requests per route, traced on real servers (uWSGI from PyPI in http-socket mode,
uWSGI behind Debian's nginx over the uwsgi protocol, an eventlet wsgi server), driven by a client
that knows what it did byte for byte (tests/workloads/http_client.py) and checked against it, the
servers' own logs and the database's counters: counts, statuses, routes, bytes exact; SQL
statements per request exact where one thread serves one request at a time."""
import collections
import json
import socket
import subprocess
import time

import pytest

import servers
from conftest import PYTHON, SCALP, WORKLOADS, Scalp, rows, run_json, wait_for

CLIENT = str(WORKLOADS / "http_client.py")


@pytest.fixture(scope="module")
def db():
    d = servers.MariaDB(port=servers.pick_port(3306)).start()
    servers.prepare_app_database(d)
    yield d
    d.stop()


def sql_args(db):
    return ["--sql-port", db.port] if db.port not in (3306, 5432) else []


def run_client(port, *args, traced_by=None):
    r = subprocess.run([PYTHON, CLIENT, "--port", str(port), *map(str, args)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def client_by_key(report, field):
    return {(r["method"], r["route"], r["status"]): r[field] for r in report["requests"]}


def by_key(http_rows, field, pids=None, direction="server", protocol=None):
    out = collections.Counter()
    for r in http_rows:
        if r["direction"] != direction or (pids is not None and r["process_pid"] not in pids):
            continue
        if protocol and r["network_protocol_name"] != protocol:
            continue
        out[(r["http_request_method"], r["http_route"], r["http_response_status_code"])] += r[field] or 0
    return dict(out)


def traced(out, *targets, extra=()):
    # Sealed every interval: settle() reads the tables while the run goes on.
    args = ["--interval", "200ms", "--rotate", "200ms"]
    for t in targets:
        args += ["--pid", t]
    return Scalp(out, *args, *extra).wait_ready()


def settle(scalp, out, expected_calls, pids=None):
    """Stops scalp-bpf once it has counted every request (the last responses end at a close the
    server makes after the client read them)."""
    def counted():
        return sum(by_key(rows(out, "http_requests"), "calls", pids).values()) >= expected_calls
    try:
        wait_for(counted, 20, "every request to be counted", scalp.proc)
    finally:
        assert scalp.stop() == 0, scalp.stderr
    return rows(out, "http_requests")


def drops(out):
    return {(d["tracer"], d["reason"]): d["count"] for d in run_json(out)["drops"]}


def total(report):
    return sum(r["calls"] for r in report["requests"])


def test_uwsgi_workers_statements_carry_the_apps_call_site(db, out):
    # uWSGI starts Python in its master and forks the workers from C, so a worker's one thread
    # state keeps the master's thread id. With --sql-code, every statement the workers make for
    # the client's requests still names its line in the app (the `execute` helper of every route).
    s = servers.UwsgiHttp(db, port=servers.pick_port(8083), workers=2).start()
    try:
        scalp = traced(out, s.proc.pid, extra=[*sql_args(db), "--sql-code"])
        report = run_client(s.port)
        workers = set(s.worker_pids())
        settle(scalp, out, total(report), workers)
    finally:
        s.stop()
    app = WORKLOADS / "wsgi_app.py"
    [line] = [n for n, text in enumerate(app.read_text().splitlines(), 1) if text.strip() == "cur.execute(sql, args)"]
    sites = collections.Counter()
    for r in rows(out, "sql_statements"):
        if r["process_pid"] in workers:
            sites[(r["code_function_name"], r["code_file_path"], r["code_line_number"])] += r["calls"]
    assert sites == {("execute", str(app), line): sum(client_by_key(report, "sql_statements").values())}
    # Their stacks go on to the route that called the helper.
    stacks = [r for r in rows(out, "sql_stacks") if r["process_pid"] in workers]
    assert stacks and all(r["stack_function_names"][r["stack_function_names"].index("execute") + 1] == "routes"
                          for r in stacks)
    assert not [k for k in drops(out) if "python" in k[1]], drops(out)


def test_uwsgi_http_socket_counts_routes_bytes_and_sql_per_request(db, out):
    s = servers.UwsgiHttp(db, port=servers.pick_port(8080), workers=2).start()
    try:
        scalp = traced(out, s.proc.pid, extra=sql_args(db))
        before = db.status()
        report = run_client(s.port)
        workers = set(s.worker_pids())
        http = settle(scalp, out, total(report), workers)
        after = db.status()
        uwsgi_log = s.requests()
    finally:
        s.stop()
    assert by_key(http, "calls", workers) == client_by_key(report, "calls")
    # uWSGI's own request log: the same requests, statuses and response bytes, per worker.
    logged = collections.Counter()
    logged_bytes = collections.Counter()
    for r in uwsgi_log:
        logged[(r["method"], servers_route(r["uri"]), r["status"])] += 1
        logged_bytes[(r["method"], servers_route(r["uri"]), r["status"])] += r["response_bytes"]
    assert by_key(http, "calls", workers) == dict(logged)
    assert by_key(http, "response_bytes", workers) == dict(logged_bytes)
    per_worker = collections.Counter(r["pid"] for r in uwsgi_log)
    traced_per_worker = collections.Counter()
    for r in http:
        if r["direction"] == "server" and r["process_pid"] in workers:
            traced_per_worker[r["process_pid"]] += r["calls"]
    assert traced_per_worker == per_worker
    assert by_key(http, "request_bytes", workers) == client_by_key(report, "request_bytes")
    assert by_key(http, "response_bytes", workers) == client_by_key(report, "response_bytes")
    server_rows = [r for r in http if r["direction"] == "server"]
    assert {r["network_protocol_name"] for r in server_rows} == {"http"}
    assert {r["process_pid"] for r in server_rows} <= workers
    # uWSGI's workers serve one request at a time: every request's cost is known, and its SQL
    # statements are exactly what the app made for it.
    assert by_key(http, "attributed_calls", workers) == client_by_key(report, "calls")
    assert by_key(http, "sql_statements", workers) == client_by_key(report, "sql_statements")
    statements = (after["Com_select"] + after["Com_insert"]) - (before["Com_select"] + before["Com_insert"])
    assert sum(by_key(http, "sql_statements", workers).values()) == statements
    # Each route's requests by statement count: GET /items/{id} makes 3 each.
    [get] = [r for r in server_rows if r["http_route"] == "/items/{id}" and r["http_request_method"] == "GET"
             and r["http_response_status_code"] == 200][:1] or [None]
    assert get is not None
    hist = collections.Counter()
    for r in server_rows:
        if r["http_route"] == "/items/{id}" and r["http_request_method"] == "GET":
            for b, n in enumerate(r["sql_statements_histogram"]):
                hist[b] += n
    assert {b: n for b, n in hist.items() if n} == {2: sum(
        v for (m, route, _), v in client_by_key(report, "calls").items() if m == "GET" and route == "/items/{id}")}
    # Syscalls per request: after the read that carried the request, a GET or HEAD makes one send
    # and one receive per statement (PyMySQL) and one writev of the response (uWSGI), as strace
    # shows; routes with bodies or streamed responses make more.
    assert all(r["syscalls"] is not None and r["syscalls"] >= r["calls"] for r in server_rows)
    for r in server_rows:
        if r["http_request_method"] in ("GET", "HEAD") and r["http_route"] != "/stream":
            assert r["syscalls"] == 2 * r["sql_statements"] + r["calls"], r
    errors = {k: v for k, v in by_key(http, "errors", workers).items() if v}
    assert errors == {k: v for k, v in client_by_key(report, "calls").items() if k[2] >= 500}
    assert all(v == 0 for (t, _), v in drops(out).items() if t == "http"), drops(out)


def test_uwsgi_behind_nginx_over_the_uwsgi_protocol(db, out):
    s = servers.UwsgiNginx(db, port=servers.pick_port(8081), workers=2).start()
    try:
        # Both tiers traced: nginx serves HTTP (keep-alive), uWSGI serves uwsgi over a Unix socket.
        scalp = traced(out, s.proc.pid, s.nginx.pid, extra=sql_args(db))
        report = run_client(s.port, "--expect-continue", "--chunked-upload", 1)
        n = total(report)
        workers = set(s.worker_pids())
        http = settle(scalp, out, n, workers)
        uwsgi_log = s.requests()
        access = s.access_log()
    finally:
        s.stop()
    calls = client_by_key(report, "calls")
    assert by_key(http, "calls", workers, protocol="uwsgi") == calls
    # uwsgi request bytes: the 4-byte header, the vars packet and the body uWSGI read.
    expected = collections.Counter()
    for r in uwsgi_log:
        expected[(r["method"], servers_route(r["uri"]), r["status"])] += 4 + r["packet_bytes"] + r["content_length"]
    assert by_key(http, "request_bytes", workers, protocol="uwsgi") == dict(expected)
    assert by_key(http, "sql_statements", workers, protocol="uwsgi") == client_by_key(report, "sql_statements")
    assert by_key(http, "attributed_calls", workers, protocol="uwsgi") == calls
    # nginx's side: the client's HTTP requests, 100 of them on one kept-alive connection.
    nginx = {s.nginx.pid} | {r["process_pid"] for r in http if r["process_name"].startswith("nginx")}
    assert by_key(http, "calls", nginx, protocol="http") == calls
    assert by_key(http, "request_bytes", nginx, protocol="http") == client_by_key(report, "request_bytes")
    assert by_key(http, "response_bytes", nginx, protocol="http") == client_by_key(report, "response_bytes")
    assert max(r["connection_requests"] for r in access) >= 100


def servers_route(uri):
    import re
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{id}", uri.split("?")[0])


def test_eventlet_keep_alive_chunked_responses_and_interleaving(db, out):
    s = servers.EventletHttp(db, port=servers.pick_port(8090), pool=8).start()
    try:
        scalp = traced(out, s.proc.pid, extra=sql_args(db))
        report = run_client(s.port, "--expect-continue", "--chunked-upload", 1)
        # Then two clients at once: their requests interleave on eventlet's one OS thread.
        both = [subprocess.Popen([PYTHON, CLIENT, "--port", str(s.port), "--keepalive", "50"],
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
        reports = [json.loads(p.communicate(timeout=180)[0]) for p in both]
        n = total(report) + sum(total(r) for r in reports)
        http = settle(scalp, out, n, {s.proc.pid})
    finally:
        s.stop()
    expected = collections.Counter(client_by_key(report, "calls"))
    for r in reports:
        expected.update(client_by_key(r, "calls"))
    assert by_key(http, "calls", {s.proc.pid}) == dict(expected)
    expected_bytes = collections.Counter(client_by_key(report, "response_bytes"))
    for r in reports:
        expected_bytes.update(client_by_key(r, "response_bytes"))
    assert by_key(http, "response_bytes", {s.proc.pid}) == dict(expected_bytes)
    assert report["keepalive"] == {"requests": 100, "connections": 1}
    attributed = sum(by_key(http, "attributed_calls", {s.proc.pid}).values())
    # Interleaved requests are not guessed at: some are left unattributed.
    assert 0 < attributed < n
    assert all(r["sql_statements"] is None for r in http if r["attributed_calls"] == 0)


def test_outgoing_requests_of_a_traced_client(db, out):
    s = servers.UwsgiHttp(db, port=servers.pick_port(8082), workers=2).start()
    try:
        r = subprocess.run([SCALP, "run", "--output", str(out), "--interval", "200ms", "--", PYTHON, CLIENT,
                            "--port", str(s.port), "--keepalive", "10"], capture_output=True, text=True, timeout=180)
    finally:
        s.stop()
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    http = rows(out, "http_requests")
    assert by_key(http, "calls", direction="client") == client_by_key(report, "calls")
    assert by_key(http, "request_bytes", direction="client") == client_by_key(report, "request_bytes")
    assert by_key(http, "response_bytes", direction="client") == client_by_key(report, "response_bytes")
    client = [r for r in http if r["direction"] == "client"]
    assert {r["server_address"] for r in client} == {f"127.0.0.1:{s.port}"}
    assert all(r["attributed_calls"] == 0 and r["sql_statements"] is None for r in client)


def test_garbage_on_an_http_socket_is_counted_and_the_rest_stays_exact(db, out):
    s = servers.EventletHttp(db, port=servers.pick_port(8091), pool=4).start()
    try:
        scalp = traced(out, s.proc.pid, extra=sql_args(db))
        # A "request" whose first bytes pass the kernel's sniff but not the parser's.
        with socket.create_connection(("127.0.0.1", s.port)) as c:
            c.sendall(b"GET \x00\x01\x02\xff garbage\r\n\r\n")
            c.settimeout(5)
            try:
                c.recv(4096)
            except OSError:
                pass
        report = run_client(s.port, "--keepalive", 10)
        http = settle(scalp, out, total(report), {s.proc.pid})
    finally:
        s.stop()
    assert by_key(http, "calls", {s.proc.pid}) == client_by_key(report, "calls")
    d = drops(out)
    assert d.get(("http", "unparsed"), 0) + d.get(("http", "stream_desync"), 0) >= 1, d
