"""The SQL tracer against real MariaDB and PostgreSQL servers and the real client drivers
(PyMySQL, psycopg 3), over TCP and Unix sockets: exact counts per fingerprint, checked against
what the workload sent and against the servers' own counters."""
import json
import socket
import subprocess
import time

import pytest

from conftest import PYTHON, WORKLOADS, Held, Scalp, rows, run_scalp

SQL = str(WORKLOADS / "sql.py")


def run_mix(out, db, server, *args, unix=False, hold=True, scalp_args=()):
    """Runs the workload (connected before tracing when hold) under scalp-bpf; returns
    (what it sent, the sql_statements rows of its process, the sql_connections rows)."""
    conn = ["--socket", str(server.socket if db == "mysql" else server.socket_dir)] if unix else []
    cmd = [db, "--port", str(server.port), *conn, *map(str, args)]
    if hold:
        work = Held(*cmd, script=SQL)
        scalp = Scalp(out, "--pid", work.pid, "--sql-port", server.port, *scalp_args).wait_ready()
        work.go()
        done = json.loads(work.readline())
        assert work.finish() == 0
        assert scalp.wait() == 0, scalp.stderr
        pid = work.pid
    else:
        r = run_scalp("run", "--output", out, "--sql-port", server.port, *scalp_args, "--", PYTHON, SQL, *cmd)
        assert r.returncode == 0, r.stderr
        done = json.loads(r.stdout.strip().splitlines()[-1])
        pid = None
    return done, rows(out, "sql_statements", pid), rows(out, "sql_connections", pid)


def by_text(stmts):
    t = {}
    for r in stmts:
        key = (r["db_query_text"], r["db_response_status_code"])
        c, e = t.get(key, (0, 0))
        t[key] = (c + r["calls"], e + r["errors"])
    return t


SELECT_FP = "SELECT id, v FROM scalp_items WHERE id = ? AND v <> ?"
INSERT_FP = "INSERT INTO scalp_items(id, v) VALUES (?)"
UPDATE_FP = "UPDATE scalp_items SET v = ? WHERE id = ?"


def test_mariadb_over_tcp_matches_the_workload_and_the_server_counters(out, mariadb):
    before = mariadb.status()
    done, stmts, conns = run_mix(out, "mysql", mariadb, "--select", 1000, "--insert", 200, "--failed", 50,
                                 "--ping", 10, "--transactions", 5)
    after = mariadb.status()
    t = by_text(stmts)
    assert t[(SELECT_FP, None)] == (1000, 0)
    assert t[(INSERT_FP, None)] == (200, 0)
    assert t[(UPDATE_FP, None)] == (15, 0)
    assert t[("PING", None)] == (10, 0)
    assert t[("BEGIN", None)] == (5, 0)
    assert sum(c for (fp, code), (c, e) in t.items() if code == "1064") == 50
    assert sum(e for (c, e) in t.values()) == 50
    # Opened before tracing, the connection's greeting was not seen: MariaDB cannot be told from
    # MySQL (new connections are; see the Unix socket test).
    assert {r["db_system_name"] for r in stmts} == {"mysql"}
    assert {(r["server_address"], r["server_port"], r["network_transport"]) for r in stmts} == {
        ("127.0.0.1", mariadb.port, "tcp")}
    # The server's own counters.
    assert after["Com_select"] - before["Com_select"] == 1000
    assert after["Com_insert"] - before["Com_insert"] == 200
    assert after["Com_update"] - before["Com_update"] == 15
    assert after["Com_begin"] - before["Com_begin"] == t[("BEGIN", None)][0]
    assert after["Com_commit"] - before["Com_commit"] == t[("COMMIT", None)][0]
    # The connection was open before tracing began: parsed from its next message on.
    # One connection (a row per interval it was active in), never seen from its start.
    mine = [c for c in conns if c["server_port"] == mariadb.port]
    assert len({c["connection_id"] for c in mine}) == 1, mine
    assert all(c["seen_from_start"] is False for c in mine)
    assert sum(r["statements"] for r in conns) == sum(r["calls"] for r in stmts)
    lat = [r for r in stmts if r["db_query_text"] == SELECT_FP]
    assert sum(sum(r["duration_histogram"]) for r in lat) == 1000
    assert all(r["duration_ns_sum"] > 0 and r["bytes_sent"] > 0 and r["bytes_received"] > 0 for r in lat)


def pg_calls(postgres, like):
    return int(postgres.psql(f"SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '{like}'").strip())


def test_postgres_extended_protocol_over_tcp_matches_pg_stat_statements(out, postgres):
    postgres.psql("SELECT pg_stat_statements_reset()")
    done, stmts, conns = run_mix(out, "postgres", postgres, "--select", 1000, "--insert", 200, "--failed", 50,
                                 "--transactions", 5)
    t = by_text(stmts)
    assert t[(SELECT_FP, None)] == (1000, 0)
    assert t[(INSERT_FP, None)] == (200, 0)
    assert t[(UPDATE_FP, None)] == (15, 0)
    failed = {}
    for (fp, code), (c, e) in t.items():
        if code:
            failed[code] = failed.get(code, 0) + c
    assert failed == {"42P01": 50}
    assert {r["db_system_name"] for r in stmts} == {"postgresql"}
    assert pg_calls(postgres, "SELECT id, v FROM scalp_items WHERE id = $1%") == 1000
    assert pg_calls(postgres, "INSERT INTO scalp_items%") == 200
    assert pg_calls(postgres, "UPDATE scalp_items%") == 15


def test_new_connections_over_unix_sockets(out, mariadb, postgres):
    done, stmts, conns = run_mix(out / "my", "mysql", mariadb, "--select", 30, "--insert", 3, "--failed", 2,
                                 unix=True, hold=False)
    t = by_text(stmts)
    assert t[(SELECT_FP, None)] == (30, 0)
    assert t[(INSERT_FP, None)] == (3, 0)
    assert {(r["network_transport"], r["server_address"], r["server_port"]) for r in stmts} == {
        ("unix", str(mariadb.socket), None)}
    assert {r["db_system_name"] for r in stmts} == {"mariadb"}
    assert all(c["seen_from_start"] and c["db_namespace"] == "scalp" for c in conns)
    assert any(c["closed"] for c in conns)
    done, stmts, conns = run_mix(out / "pg", "postgres", postgres, "--select", 40, "--failed", 4,
                                 unix=True, hold=False)
    t = by_text(stmts)
    assert t[(SELECT_FP, None)] == (40, 0)
    assert sum(e for c, e in t.values()) == 4
    assert {(r["network_transport"], r["server_address"]) for r in stmts} == {
        ("unix", f"{postgres.socket_dir}/.s.PGSQL.{postgres.port}")}
    assert all(c["seen_from_start"] and c["db_namespace"] == "scalp" for c in conns)


def test_literals_are_written_only_when_asked(out, mariadb):
    done, stmts, _ = run_mix(out / "plain", "mysql", mariadb, "--select", 5, hold=False)
    assert all(r["db_query_sample"] is None for r in stmts)
    assert not any("x3" in str(v) for r in stmts for v in r.values())
    done, stmts, _ = run_mix(out / "raw", "mysql", mariadb, "--select", 5, hold=False, scalp_args=["--sql-raw-text"])
    [sel] = [r for r in stmts if r["db_query_text"] == SELECT_FP]
    assert sel["db_query_sample"].startswith("SELECT id, v FROM scalp_items WHERE id = ")


OTHER_TRAFFIC = r'''
import socket, sys, urllib.request
m = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(50):
    m.sendall(b"set k%d 0 0 1\r\nx\r\n" % i); m.recv(100)
    m.sendall(b"get k%d\r\n" % i); m.recv(100)
for i in range(20):
    urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[2]).read()
print("ok")
'''


@pytest.fixture
def memcached_and_http(tmp_path):
    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    mc_port, http_port = free_port(), free_port()
    mc = subprocess.Popen(["memcached", "-u", "nobody", "-l", "127.0.0.1", "-p", str(mc_port), "-U", "0"])
    http = subprocess.Popen([PYTHON, "-m", "http.server", str(http_port), "--bind", "127.0.0.1",
                             "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in (mc_port, http_port):
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
    yield mc_port, http_port
    mc.kill()
    http.kill()


def test_other_protocols_never_appear_as_sql(out, memcached_and_http):
    mc_port, http_port = memcached_and_http
    # Declared as SQL ports, their connections are captured as SQL: what is tested is that their
    # traffic does not parse as SQL statements.
    r = run_scalp("run", "--output", out, "--sql-port", mc_port, "--sql-port", http_port,
                  "--", PYTHON, "-c", OTHER_TRAFFIC, mc_port, http_port)
    assert r.returncode == 0, r.stderr
    assert rows(out, "sql_statements") == []
    # Like a TLS connection (README): counted as a connection to the declared port, bytes only.
    conns = rows(out, "sql_connections")
    assert {r["server_port"] for r in conns} == {mc_port, http_port}, conns
    assert all(r["statements"] == 0 and r["errors"] == 0 for r in conns), conns
    assert sum(r["bytes_sent"] + r["bytes_received"] for r in conns) > 0
    assert sum(x["bytes"] for x in rows(out, "fileio") if x["file_kind"] == "socket") > 0
