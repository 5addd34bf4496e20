"""Nothing is lost silently: losses forced for real (scalp-bpf stopped with SIGSTOP while the kernel
side keeps writing into full ring buffers) show up in the drops table, in run.json and in the exit
summary on stderr, with counts that add up against what the workloads did."""
import json
import os
import signal
import subprocess

from conftest import PYTHON, Scalp, rows, run_json, wait_for

# A MySQL client in three phases, each a distinct statement text, run on request: "PHASE N" on
# stdin sends N statements, then prints {"phase": PHASE, "sent": N}.
PHASED_CLIENT = r'''
import json, os, sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="scalp", password="scalp-test",
                       database="scalp")
cur = conn.cursor()
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    phase, n = line.split()
    for i in range(int(n)):
        cur.execute(f"SELECT id AS phase_{phase} FROM scalp_items WHERE id = %s", (i % 3,))
        cur.fetchall()
    print(json.dumps({"phase": phase, "sent": int(n)}), flush=True)
conn.close()
'''

# Every SELECT of the overflow phase sends one request and receives one response: at least two
# events of 40 header bytes + 8 of ring framing, so this many overflow a 1 MiB ring whatever the
# statements' size.
OVERFLOW = 15_000
CALM = 500


def drops_by_reason(out):
    totals = {}
    for r in rows(out, "drops"):
        key = (r["tracer"], r["reason"])
        totals[key] = totals.get(key, 0) + r["count"]
    return totals


def phase_calls(stmts, phase):
    return sum(r["calls"] for r in stmts if f"phase_{phase}" in r["db_query_text"])


def test_a_full_sql_ring_is_counted_and_the_tracer_recovers(out, mariadb):
    client = subprocess.Popen([PYTHON, "-c", PHASED_CLIENT, str(mariadb.port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)

    def phase(name, n):
        client.stdin.write(f"{name} {n}\n")
        client.stdin.flush()
        assert json.loads(client.stdout.readline()) == {"phase": name, "sent": n}

    try:
        ready = client.stdout.readline()
        assert ready.startswith("ready "), ready
        # Sealed every interval: the drops table is read while the run goes on.
        scalp = Scalp(out, "--pid", client.pid, "--sql-port", mariadb.port, "--sql-ring-mib", 1,
                      "--tracers", "syscalls,fileio,sql", "--interval", "200ms", "--rotate", "200ms").wait_ready()
        # a: scalp-bpf drains the ring as usual.
        phase("a", CALM)
        # b: scalp-bpf is stopped; the kernel side fills the 1 MiB ring, then can only count.
        os.kill(scalp.proc.pid, signal.SIGSTOP)
        try:
            phase("b", OVERFLOW)
        finally:
            os.kill(scalp.proc.pid, signal.SIGCONT)
        # The first interval after SIGCONT drains the whole ring before it writes its drops row.
        wait_for(lambda: drops_by_reason(out).get(("sockets", "event_ring_full"), 0) > 0, 60,
                 "the lost SQL events in the drops table", scalp.proc)
        # c: room again; nothing more is lost.
        phase("c", CALM)
        client.stdin.close()
        assert client.wait(60) == 0
        assert scalp.wait() == 0, scalp.stderr
    finally:
        client.kill()

    stmts = rows(out, "sql_statements", client.pid)
    a, b, c = (phase_calls(stmts, p) for p in "abc")
    drops = drops_by_reason(out)
    lost = drops[("sockets", "event_ring_full")]
    # Exact before and after the overflow: the ring was drained, then had room again.
    assert (a, c) == (CALM, CALM)
    # During it, what the ring held was decoded and the rest lost, not mis-parsed.
    assert 0 < b < OVERFLOW
    other = [(r["db_query_text"], r["calls"], r["errors"]) for r in stmts
             if not any(f"phase_{p}" in r["db_query_text"] for p in "abc")]
    assert other == [("QUIT", 1, 0)]
    # The events lost are the tail of phase b: the statements missing, times the events a
    # statement takes. Every send or receive on the connection that moved bytes is one event
    # (plus one for the connection itself), and the file I/O tracer counted those syscalls.
    sock = [r for r in rows(out, "fileio", client.pid) if r["file_kind"] == "socket"]
    attempted = sum(r["calls"] - r["errors"] for r in sock) + 1
    sent = 2 * CALM + OVERFLOW
    per_statement = attempted / sent
    missing = OVERFLOW - b
    print(f"sent {sent}, counted b {b} of {OVERFLOW}, lost {lost}, attempted {attempted}, drops {drops}")
    assert 1.9 < per_statement < 3.5, per_statement
    assert lost <= attempted
    assert abs(lost - missing * per_statement) <= 0.05 * missing * per_statement + 3, (lost, missing, per_statement)
    # The parser lost its place at most where the loss began and where it ended.
    assert drops.get(("sql", "stream_desync"), 0) <= 2
    # The connection's byte counts fall short by what was lost, never exceed what moved.
    conns = rows(out, "sql_connections", client.pid)
    moved = sum(r["bytes"] for r in sock)
    seen = sum(r["bytes_sent"] + r["bytes_received"] for r in conns)
    assert 0 < seen < moved
    # The same total in run.json and in the summary at exit.
    assert {"tracer": "sockets", "reason": "event_ring_full", "count": lost} in run_json(out)["drops"]
    assert f"scalp-bpf: dropped {lost} (sockets event_ring_full)" in scalp.stderr
    # Losses are per interval: one or more rows, each with a positive count.
    lost_rows = [r for r in rows(out, "drops") if r["reason"] == "event_ring_full"]
    assert lost_rows and all(r["count"] > 0 and r["interval_start"] < r["interval_end"] for r in lost_rows)


# A parent that forks N children in a burst on request ("burst N"), each making a few syscalls and
# exiting with code 3; it reaps them and prints {"forked": N}.
FORKER = r'''
import json, os, sys
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    n = int(line.split()[1])
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            os.getppid()
            os._exit(3)
        os.waitpid(pid, 0)
    print(json.dumps({"forked": n}), flush=True)
'''

# Each fork and each exit is one 328-byte record in a 1 MiB ring: 3,196 events, about 1,600
# children. Twice that surely overflows it.
BURST = 3_200


def test_a_full_process_event_ring_is_counted_and_every_child_accounted_for(out):
    parent = subprocess.Popen([PYTHON, "-c", FORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = parent.stdout.readline()
        assert ready.startswith("ready "), ready
        scalp = Scalp(out, "--pid", parent.pid, "--tracers", "syscalls", "--interval", "200ms").wait_ready()
        os.kill(scalp.proc.pid, signal.SIGSTOP)
        try:
            parent.stdin.write(f"burst {BURST}\n")
            parent.stdin.flush()
            assert json.loads(parent.stdout.readline()) == {"forked": BURST}
        finally:
            os.kill(scalp.proc.pid, signal.SIGCONT)
        parent.stdin.close()
        assert parent.wait(60) == 0
        assert scalp.wait() == 0, scalp.stderr
    finally:
        parent.kill()

    lost = drops_by_reason(out).get(("process", "event_ring_full"), 0)
    assert lost > 0
    children = [p for p in rows(out, "processes") if p["process_parent_pid"] == parent.pid]
    # A child is traced only when its fork event could be sent. Its exit event, if lost too, is
    # made up for by the check of /proc (the process ended, its exit status unknown).
    exited = [p for p in children if p["process_exit_code"] is not None]
    assert all(p["process_exit_code"] == 3 for p in exited)
    assert all(p["process_end_time"] is not None for p in children)
    lost_exits = len(children) - len(exited)
    lost_forks = lost - lost_exits
    assert 0 < lost_forks < BURST
    print(f"children traced {len(children)}, lost {lost}: forks {lost_forks}, exits {lost_exits}")
    assert len(children) + lost_forks == BURST
    # No rows of processes it does not know: the untraced children made none.
    traced = {p["process_pid"] for p in rows(out, "processes")}
    assert {r["process_pid"] for r in rows(out, "syscalls")} <= traced
    pids = {p["process_pid"] for p in children}
    getppid = sum(r["calls"] for r in rows(out, "syscalls") if r["process_pid"] in pids and r["syscall_name"] == "getppid")
    assert getppid == len(children)
    assert {"tracer": "process", "reason": "event_ring_full", "count": lost} in run_json(out)["drops"]
    assert f"scalp-bpf: dropped {lost} (process event_ring_full)" in scalp.stderr
