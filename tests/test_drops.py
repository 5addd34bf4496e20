"""Nothing is lost silently: losses forced for real (scalp-bpf stopped with SIGSTOP while the kernel
side keeps writing into full ring buffers) show up in the drops table, in run.json and in the exit
summary on stderr, with counts that add up exactly against what the workloads did. The kernel
maps' own losses are in test_map_drops.py."""
import json
import os
import signal
import subprocess

import bpfmaps
from conftest import PYTHON, Scalp, rows, run_json, wait_for

# A MySQL client that counts its own socket syscalls. On request it sends N statements of a
# phase, each a distinct statement text ("PHASE N"), or N pings ("PING N"), then prints what it
# did: {"phase": PHASE, "sent": N, "events": E, "bytes": B}, where E counts its send and receive
# syscalls that moved bytes on the connection (each one is one event of the socket capture) and B
# the bytes they moved. PyMySQL's socket is wrapped so that every send(2) and recv(2) goes
# through the counters.
PHASED_CLIENT = r'''
import io, json, os, socket, sys, pymysql

class Counted:
    def __init__(self, sock):
        self.sock, self.events, self.bytes = sock, 0, 0
    def recv_into(self, buf, n=0, flags=0):
        got = self.sock.recv_into(buf, n, flags)
        if got > 0:
            self.events += 1
            self.bytes += got
        return got
    def sendall(self, data):
        view = memoryview(data)
        while view:
            sent = self.sock.send(view)
            if sent > 0:
                self.events += 1
                self.bytes += sent
            view = view[sent:]
    def __getattr__(self, name):
        return getattr(self.sock, name)

conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="scalp", password="scalp-test",
                       database="scalp")
counted = Counted(conn._sock)
conn._sock = counted
conn._rfile = io.BufferedReader(socket.SocketIO(counted, "rb"))
cur = conn.cursor()
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    phase, n = line.split()
    events, nbytes = counted.events, counted.bytes
    for i in range(int(n)):
        if phase == "PING":
            conn.ping(reconnect=False)
        else:
            cur.execute(f"SELECT id AS phase_{phase} FROM scalp_items WHERE id = %s", (i % 3,))
            cur.fetchall()
    print(json.dumps({"phase": phase, "sent": int(n), "events": counted.events - events,
                      "bytes": counted.bytes - nbytes}), flush=True)
conn.close()
'''

# Each phase-b statement is at least two events; this many would overflow a 1 MiB ring by
# themselves.
OVERFLOW = 15_000
CALM = 500
# COM_PING (4-byte header + command) and its OK packet (header + 7 bytes); COM_QUIT.
PING_BYTES, QUIT_BYTES = 5 + 11, 5
# The socket capture's drop counters (tracer-common/src/sockets.rs: SocketDrop).
SOCKETS_DROPS, EVENT_RING_FULL = "SOCKETS_DROPS", 0


def drops_by_reason(out):
    totals = {}
    for r in rows(out, "drops"):
        key = (r["tracer"], r["reason"])
        totals[key] = totals.get(key, 0) + r["count"]
    return totals


def phase_calls(stmts, phase):
    return sum(r["calls"] for r in stmts if f"phase_{phase}" in r["db_query_text"])


def test_a_full_sql_ring_is_counted_exactly_and_the_tracer_recovers(out, mariadb):
    """scalp-bpf is stopped (SIGSTOP) with a 1 MiB ring. Pings fill the ring to the last record
    (read from the kernel's own drop counter as they go); then a whole phase of statements can
    only be lost. Every lost event is counted: the drops equal the send and receive syscalls the
    client itself counted, and counting is exact again once scalp-bpf runs."""
    client = subprocess.Popen([PYTHON, "-c", PHASED_CLIENT, str(mariadb.port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)

    def phase(name, n):
        client.stdin.write(f"{name} {n}\n")
        client.stdin.flush()
        done = json.loads(client.stdout.readline())
        assert (done["phase"], done["sent"]) == (name, n), done
        return done

    try:
        ready = client.stdout.readline()
        assert ready.startswith("ready "), ready
        # Sealed every interval: the drops table is read while the run goes on.
        scalp = Scalp(out, "--pid", client.pid, "--sql-port", mariadb.port, "--sql-ring-mib", 1,
                      "--tracers", "syscalls,fileio,sql", "--interval", "200ms", "--rotate", "200ms").wait_ready()
        counters = bpfmaps.PerCpuCounters(scalp.proc.pid, SOCKETS_DROPS)
        lost = lambda: counters.sum(EVENT_RING_FULL)
        first_loss_ping = None
        # a: scalp-bpf drains the ring as usual.
        done_a = phase("a", CALM)
        os.kill(scalp.proc.pid, signal.SIGSTOP)
        try:
            # Pings, one at a time, until the kernel could not put an event in the ring; then one
            # more. A ping is a 5-byte request (a 72-byte record) and an 11-byte OK (80 bytes):
            # once one failed and one more ping went by, less than 72 bytes are left, and no
            # event of the connection (≥ 1 byte of data: ≥ 72 bytes) fits any more.
            # 4,000 pings are 608,000 bytes of records: the ring still has room after them.
            bulk = phase("PING", 4000)
            assert (bulk["events"], bulk["bytes"], lost()) == (8000, 4000 * PING_BYTES, 0), bulk
            pings, ping_bytes = 4000, bulk["bytes"]
            while lost() == 0 or pings == first_loss_ping:
                assert pings < 20_000, "1 MiB of pings never filled the ring"
                done = phase("PING", 1)
                assert (done["events"], done["bytes"]) == (2, PING_BYTES), done
                pings += 1
                ping_bytes += done["bytes"]
                if first_loss_ping is None and lost() > 0:
                    first_loss_ping = pings
            lost_while_filling = lost()
            # b: everything it sends or receives is lost, and counted.
            done_b = phase("b", OVERFLOW)
            assert lost() == lost_while_filling + done_b["events"]
        finally:
            os.kill(scalp.proc.pid, signal.SIGCONT)
        # The first interval after SIGCONT drains the whole ring before it writes its drops row.
        wait_for(lambda: (out / "drops").is_dir()
                 and drops_by_reason(out).get(("sockets", "event_ring_full"), 0) > 0, 60,
                 "the lost SQL events in the drops table", scalp.proc)
        # c: room again; nothing more is lost.
        done_c = phase("c", CALM)
        client.stdin.close()
        assert client.wait(60) == 0
        assert scalp.wait() == 0, scalp.stderr
    finally:
        client.kill()
        if "counters" in locals():
            counters.close()

    stmts = rows(out, "sql_statements", client.pid)
    a, b, c = (phase_calls(stmts, p) for p in "abc")
    drops = drops_by_reason(out)
    total_lost = drops[("sockets", "event_ring_full")]
    print(f"pings {pings} (first loss at {first_loss_ping}), lost while filling {lost_while_filling}, "
          f"phase b events {done_b['events']}, lost {total_lost}, drops {drops}")
    # Exact before and after the overflow; nothing of phase b got through.
    assert (a, b, c) == (CALM, 0, CALM)
    # What was lost is what the client did in phase b, plus the tail of the pings (the ping
    # during which the first event was lost and the one after: 2 to 4 events).
    assert done_b["events"] >= 2 * OVERFLOW
    assert total_lost == lost_while_filling + done_b["events"]
    assert 2 <= lost_while_filling <= 4, lost_while_filling
    # The pings before the first loss were all decoded; the two after it were not complete.
    calls = {r["db_query_text"]: r["calls"] for r in stmts if "phase_" not in r["db_query_text"]}
    assert calls == {"PING": first_loss_ping - 1, "QUIT": 1}, calls
    assert sum(r["errors"] for r in stmts) == 0
    # The parser lost its place at most where the loss began and where it ended.
    assert drops.get(("sql", "stream_desync"), 0) <= 2
    # The connection's bytes fall short of what moved by phase b's and the lost ping events'
    # (each a 5-byte request or an 11-byte OK).
    conns = rows(out, "sql_connections", client.pid)
    seen = sum(r["bytes_sent"] + r["bytes_received"] for r in conns)
    moved = done_a["bytes"] + ping_bytes + done_b["bytes"] + done_c["bytes"] + QUIT_BYTES
    assert 5 * lost_while_filling <= moved - done_b["bytes"] - seen <= 11 * lost_while_filling, (moved, seen)
    # The same total in run.json and in the summary at exit.
    assert {"tracer": "sockets", "reason": "event_ring_full", "count": total_lost} in run_json(out)["drops"]
    assert f"scalp-bpf: dropped {total_lost} (sockets event_ring_full)" in scalp.stderr
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
        # Sealed every interval: the drops table is read while the run goes on.
        scalp = Scalp(out, "--pid", parent.pid, "--tracers", "syscalls", "--interval", "200ms",
                      "--rotate", "200ms").wait_ready()
        os.kill(scalp.proc.pid, signal.SIGSTOP)
        try:
            parent.stdin.write(f"burst {BURST}\n")
            parent.stdin.flush()
            assert json.loads(parent.stdout.readline()) == {"forked": BURST}
        finally:
            os.kill(scalp.proc.pid, signal.SIGCONT)
        # The ring drained (its losses written) before the parent exits: its own exit event must
        # not be lost with the children's.
        # (The drops table's directory appears with its first sealed part: not there is not yet.)
        wait_for(lambda: (out / "drops").is_dir()
                 and drops_by_reason(out).get(("process", "event_ring_full"), 0) > 0, 60,
                 "the lost process events in the drops table", scalp.proc)
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
