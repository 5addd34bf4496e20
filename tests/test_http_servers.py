"""The HTTP test servers and client, checked without scalp-bpf: each server starts, serves the
client's mix, and its own request log (and the database's statement counters) agree with what
the client says it did — counts per method, route and status, bytes, SQL statements — so that the
HTTP acceptance tests can take either side as ground truth. Then they stop cleanly."""
import collections
import json
import re
import subprocess

import pytest

import servers
from conftest import PYTHON, WORKLOADS, wait_for

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def route(uri):
    return UUID.sub("{id}", uri.split("?")[0])


def by_key(rows, field=None):
    """Sums `field` (or counts rows) per (method, route, status) of log rows."""
    out = collections.Counter()
    for r in rows:
        out[(r["method"], route(r["uri"]), r["status"])] += r[field] if field else 1
    return dict(out)


def client_by_key(report, field):
    return {(r["method"], r["route"], r["status"]): r[field] for r in report["requests"]}


@pytest.fixture(scope="module")
def db():
    d = servers.MariaDB(port=servers.pick_port(3306)).start()
    servers.prepare_app_database(d)
    yield d
    d.stop()


def sql_questions(db):
    s = db.status()
    return s["Com_select"] + s["Com_insert"]


def run_client(server, *args):
    r = subprocess.run([PYTHON, str(WORKLOADS / "http_client.py"), "--port", str(server.port), *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def logged(read, expected, what):
    """The log rows once they are all written (servers log after answering)."""
    wait_for(lambda: len(read()) >= expected, timeout=10, what=what)
    rows = read()
    assert len(rows) == expected
    return rows


def total_calls(report):
    return sum(r["calls"] for r in report["requests"])


def test_uwsgi_http_socket(db):
    with_server = servers.UwsgiHttp(db, port=servers.pick_port(8080), workers=2).start()
    try:
        before = sql_questions(db)
        report = run_client(with_server)
        rows = logged(with_server.requests, total_calls(report), "uwsgi's request log")
        assert by_key(rows) == client_by_key(report, "calls")
        # uWSGI writes the head and body it logs: its sizes are the response bytes on the wire.
        assert by_key(rows, "response_bytes") == client_by_key(report, "response_bytes")
        assert sql_questions(db) - before == sum(r["sql_statements"] for r in report["requests"])
        # Both workers served requests; http-socket closes the connection after each response.
        assert {r["pid"] for r in rows} == set(with_server.worker_pids())
        assert report["keepalive"] == {"requests": 100, "connections": 100}
        assert report["connections"] == total_calls(report)
    finally:
        with_server.stop()


def test_uwsgi_behind_nginx(db):
    s = servers.UwsgiNginx(db, port=servers.pick_port(8081), workers=2).start()
    try:
        before = sql_questions(db)
        report = run_client(s, "--expect-continue", "--chunked-upload", 1)
        n = total_calls(report)
        access = logged(s.access_log, n, "nginx's access log")
        assert by_key(access) == client_by_key(report, "calls")
        assert by_key(access, "request_bytes") == client_by_key(report, "request_bytes")
        assert by_key(access, "response_bytes") == client_by_key(report, "response_bytes")
        # Every request reached uWSGI over the uwsgi protocol, with the same status.
        assert by_key(logged(s.requests, n, "uwsgi's request log")) == client_by_key(report, "calls")
        assert sql_questions(db) - before == sum(r["sql_statements"] for r in report["requests"])
        # The client kept its connection to nginx for the last 100 requests.
        assert report["keepalive"] == {"requests": 100, "connections": 1}
        assert max(r["connection_requests"] for r in access) >= 100
        chunked = [r for r in access if r["uri"] == "/upload"]
        assert [r["status"] for r in chunked] == [200, 200]
    finally:
        s.stop()


def test_eventlet_keep_alive(db):
    s = servers.EventletHttp(db, port=servers.pick_port(8090)).start()
    try:
        before = sql_questions(db)
        report = run_client(s, "--expect-continue", "--chunked-upload", 1)
        rows = logged(s.requests, total_calls(report), "eventlet's access log")
        assert by_key(rows) == client_by_key(report, "calls")
        # eventlet logs the bytes it wrote for the final response (head, chunk framing included).
        interim = client_by_key(report, "interim_bytes")
        expected = {k: v - interim[k] for k, v in client_by_key(report, "response_bytes").items()}
        assert by_key(rows, "response_bytes") == expected
        assert interim[("POST", "/upload", 200)] == 2 * len(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert sql_questions(db) - before == sum(r["sql_statements"] for r in report["requests"])
        assert report["keepalive"] == {"requests": 100, "connections": 1}
    finally:
        s.stop()


def test_servers_stop_cleanly(db):
    started = [servers.UwsgiHttp(db, port=servers.pick_port(8180)).start(),
               servers.UwsgiNginx(db, port=servers.pick_port(8181)).start(),
               servers.EventletHttp(db, port=servers.pick_port(8190)).start()]
    pids = []
    for s in started:
        pids += [s.proc.pid] + getattr(s, "worker_pids", lambda: [])()
        if getattr(s, "nginx", None):
            pids.append(s.nginx.pid)
    for s in started:
        s.stop()
    for s in started:
        assert servers.port_free(s.port)
        assert s.proc.returncode is not None
    alive = [p for p in pids if subprocess.run(["kill", "-0", str(p)], capture_output=True).returncode == 0]
    assert alive == []


def test_uwsgi_http_socket_postgresql():
    """The same app on psycopg: statements per request are as exact on PostgreSQL."""
    pg = servers.Postgres(port=servers.pick_port(5432)).start()
    try:
        servers.prepare_app_database(pg)
        s = servers.UwsgiHttp(pg, port=servers.pick_port(8080), workers=2).start()
        try:
            pg.psql("SELECT pg_stat_statements_reset()")
            report = run_client(s, "--keepalive", 10)
            rows = logged(s.requests, total_calls(report), "uwsgi's request log")
            assert by_key(rows) == client_by_key(report, "calls")
            done = pg.psql("SELECT sum(calls) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'")
            assert int(done) == sum(r["sql_statements"] for r in report["requests"])
        finally:
            s.stop()
    finally:
        pg.stop()
