"""Every kernel map that can fill up counts what it could not hold. The maps are made small on
purpose (`run --map-entries MAP=N`, a hidden test-only flag) and each loss is checked against an
independent count of what happened: the device's own counters (/sys/block), the workload's own
record, or a second scalp-bpf with the normal sizes tracing the same process at the same time
(each run has its own programs and maps; both see the very same calls). Counted plus dropped must
equal what happened, exactly."""
import json
import os
import socket
import subprocess

import pytest

import bpfmaps
from conftest import PYTHON, WORKLOADS, Held, Scalp, rows, run_json, run_scalp, syscall_totals
from test_blockio import disk_stat, loopfs, prepare  # noqa: F401 (loopfs is a fixture)

BLOCK = 4096


def drops(out):
    """{(tracer, reason): count} from the drops table, checked against run.json's totals."""
    totals = {}
    for r in rows(out, "drops"):
        assert r["count"] > 0 and r["interval_start"] < r["interval_end"], r
        key = (r["tracer"], r["reason"])
        totals[key] = totals.get(key, 0) + r["count"]
    assert {(d["tracer"], d["reason"]): d["count"] for d in run_json(out)["drops"]} == totals
    return totals


def beside(tmp_path, pid, small, *args):
    """Two runs on `pid`: one with the maps sized by `small` (MAP=N…), one with the normal sizes."""
    sized = [a for m in small for a in ("--map-entries", m)]
    a = Scalp(tmp_path / "small", "--pid", pid, "--interval", "200ms", *sized, *args).wait_ready()
    b = Scalp(tmp_path / "normal", "--pid", pid, "--interval", "200ms", *args).wait_ready()
    return a, b


def finish(*scalps):
    for s in scalps:
        assert s.wait() == 0, s.stderr


def syscalls_beside(tmp_path, small, pin=False):
    """A workload of known syscalls traced twice (`beside`), pinned to one CPU with `pin`; returns
    its pid, the small run's totals, the normal run's (checked against what the workload did) and
    the small run."""
    work = Held("--getppid", 1000, "--fail-openat", 300, "--fail-rmdir", 200)
    try:
        if pin:
            os.sched_setaffinity(work.pid, {min(os.sched_getaffinity(0))})
        a, b = beside(tmp_path, work.pid, small, "--tracers", "syscalls")
        work.go()
        assert work.finish() == 0
        finish(a, b)
    finally:
        work.kill()
    got, want = syscall_totals(tmp_path / "small"), syscall_totals(tmp_path / "normal")
    assert want[(work.pid, "getppid")][:2] == (1000, 0)
    assert want[(work.pid, "openat")][:2] == (300, 300)
    assert want[(work.pid, "rmdir")][:2] == (200, 200)
    return work.pid, got, want, a


def test_a_full_syscall_stats_map_counts_every_call_it_could_not_hold(tmp_path):
    # No per-CPU slots (fewer than 2 per CPU): every pair goes to the hash.
    _, got, want, small = syscalls_beside(tmp_path, ["SYSCALL_STATS=4", "SYSCALL_SLOTS=1"])
    # The small map held 4 (process, syscall) pairs, each counted exactly (a key, once in, stays
    # while its process lives); every call of every other pair is a drop.
    assert len(got) == 4, got
    assert all(got[k][:2] == want[k][:2] for k in got), (got, want)
    lost = sum(c[0] for k, c in want.items() if k not in got)
    assert lost > 0
    d = drops(tmp_path / "small")
    assert d == {("syscalls", "stats_map_full"): lost}, (d, lost)
    assert f"scalp-bpf: dropped {lost} (syscalls stats_map_full)" in small.stderr
    assert drops(tmp_path / "normal") == {}


def test_pairs_whose_cpu_slot_another_pair_holds_are_counted_exactly_in_the_hash(tmp_path):
    """Two slots per CPU, the workload pinned to one CPU: the first pairs to reach that CPU's two
    slots keep them, every other pair's calls go to the per-CPU hash. The sums must equal a
    normal run's, which has room for every pair in slots."""
    per_cpu = 2
    entries = per_cpu * bpfmaps.possible_cpus()
    pid, got, want, _ = syscalls_beside(tmp_path, [f"SYSCALL_SLOTS={entries}"], pin=True)
    # More pairs than one CPU's slots: some were counted in the hash alone.
    assert len([k for k in want if k[0] == pid]) > per_cpu
    assert {k: c[:2] for k, c in got.items()} == {k: c[:2] for k, c in want.items()}
    assert drops(tmp_path / "small") == {} and drops(tmp_path / "normal") == {}


def fileio_totals(out, pid):
    t = {}
    for r in rows(out, "fileio", pid):
        key = (r["file_kind"], r["op"])
        c = t.get(key, (0, 0, 0))
        t[key] = (c[0] + r["calls"], c[1] + r["errors"], c[2] + r["bytes"])
    return t


def test_a_full_fileio_stats_map_counts_every_call_it_could_not_hold(tmp_path):
    work = Held("kinds", "--path", tmp_path / "kinds.dat", script=WORKLOADS / "fileio.py")
    try:
        small, normal = beside(tmp_path, work.pid, ["FILEIO_STATS=2"], "--tracers", "syscalls,fileio")
        work.go()
        assert work.finish() == 0
        finish(small, normal)
    finally:
        work.kill()
    got = fileio_totals(tmp_path / "small", work.pid)
    want = fileio_totals(tmp_path / "normal", work.pid)
    assert want[("socket", "write")] == (1, 0, 3000) and want[("pipe", "write")] == (2, 0, 4000)
    assert len(got) == 2 and all(got[k] == want[k] for k in got), (got, want)
    lost = sum(c[0] for k, c in want.items() if k not in got)
    assert lost >= 3
    assert drops(tmp_path / "small") == {("fileio", "stats_map_full"): lost}
    assert drops(tmp_path / "normal") == {}


# Writes `rounds` times 100 bytes to each of `files` files, round-robin; prints what it did.
MANY_FILES = r"""
import json, os, sys
base, files, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
fds = [os.open(f"{base}/f{i}.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for i in range(files)]
for _ in range(rounds):
    for fd in fds:
        assert os.write(fd, b"x" * 100) == 100
for fd in fds:
    os.close(fd)
print(json.dumps({"writes": files * rounds}), flush=True)
sys.stdin.readline()
"""


def test_a_full_file_stats_map_counts_every_call_it_could_not_hold(tmp_path):
    files, rounds = 6, 50
    work = subprocess.Popen([PYTHON, "-c", MANY_FILES, str(tmp_path), str(files), str(rounds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(work.stdout.readline().split()[1])
        small, normal = beside(tmp_path, pid, ["FILE_STATS=2"], "--tracers", "syscalls,fileio",
                               "--files", 20)
        work.stdin.write("go\n")
        work.stdin.flush()
        assert json.loads(work.stdout.readline()) == {"writes": files * rounds}
        work.stdin.close()
        assert work.wait(60) == 0
        finish(small, normal)
    finally:
        work.kill()

    def per_file(out):
        t = {}
        for r in rows(out, "files", pid):
            t[r["file_path"]] = t.get(r["file_path"], 0) + r["writes"] + r["reads"]
        return t

    got, want = per_file(tmp_path / "small"), per_file(tmp_path / "normal")
    # The files table names a file by its name (the dentry's), not its path.
    names = {f"f{i}.dat" for i in range(files)}
    ours = {p: n for p, n in want.items() if p in names}
    assert sorted(ours.values()) == [rounds] * files, want
    assert len(got) <= 2 and all(got[p] == want[p] for p in got), (got, want)
    lost = sum(n for p, n in want.items() if p not in got)
    assert lost >= (files - 2) * rounds
    assert drops(tmp_path / "small") == {("files", "stats_map_full"): lost}
    assert drops(tmp_path / "normal") == {}


def test_a_full_block_stats_map_counts_every_request_it_could_not_hold(out, loopfs):
    """O_DIRECT writes and reads are two keys (op write, sync; op read) of a one-entry map: the
    requests of the key that did not fit are drops, and with the ones counted they make what
    the device completed (/sys/block/<dev>/stat)."""
    mnt, dev = loopfs
    path = mnt / "stats-full.dat"
    prepare(path, 64 * BLOCK)
    work = Held("direct", "--path", path, "--writes", 64, "--reads", 40, script=WORKLOADS / "fileio.py")
    scalp = Scalp(out, "--pid", work.pid, "--interval", "200ms", "--tracers", "syscalls,blockio",
                  "--map-entries", "BLOCK_STATS=1").wait_ready()
    before = disk_stat(dev)
    work.go()
    assert work.finish() == 0
    after = disk_stat(dev)
    assert scalp.wait() == 0, scalp.stderr
    reads, _, writes, _ = (b - a for a, b in zip(before, after))
    assert (reads, writes) == (40, 64), "the device saw other I/O"
    counted = {(r["op"], r["attribution"]): r["requests"] for r in rows(out, "blockio", work.pid)}
    assert len(counted) == 1 and list(counted.values())[0] in (40, 64), counted
    assert drops(out) == {("blockio", "stats_map_full"): reads + writes - sum(counted.values())}


PID_BEYOND = r"""
import json, os, sys
BEYOND = int(sys.argv[1])
print("ready", os.getpid(), flush=True)
sys.stdin.readline()

def child():
    pid = os.fork()
    if pid == 0:
        for _ in range(10):
            os.getppid()
        os._exit(0)
    os.waitpid(pid, 0)
    return pid

old = open("/proc/sys/kernel/pid_max").read().strip()
beyond = []
try:
    # pid_max raised while tracing: the next PIDs handed out are at or above the old limit.
    with open("/proc/sys/kernel/pid_max", "w") as f:
        f.write(str(2 * int(old)))
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(int(old) - 1))
    beyond = [child() for _ in range(BEYOND)]
finally:
    with open("/proc/sys/kernel/pid_max", "w") as f:
        f.write(old)
within = child()
print(json.dumps({"pid_max": int(old), "beyond": beyond, "within": within}), flush=True)
"""


@pytest.fixture
def restore_pid_max():
    with open("/proc/sys/kernel/pid_max") as f:
        old = f.read()
    yield int(old)
    with open("/proc/sys/kernel/pid_max", "w") as f:
        f.write(old)


def test_a_pid_beyond_the_pid_max_at_start_is_counted_and_not_traced(out, restore_pid_max):
    """TRACED holds one byte per PID up to kernel.pid_max when scalp-bpf started. The traced
    workload raises pid_max and sets the last PID handed out just below the old limit, forks
    three children there (each makes 10 getppid), puts pid_max back, and forks one more: the
    three are drops and untraced, the fourth is traced."""
    n = 3
    work = subprocess.Popen([PYTHON, "-c", PID_BEYOND, str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pid = int(work.stdout.readline().split()[1])
        scalp = Scalp(out, "--pid", pid, "--interval", "200ms", "--tracers", "syscalls").wait_ready()
        work.stdin.write("go\n")
        work.stdin.flush()
        did = json.loads(work.stdout.readline())
        work.stdin.close()
        assert work.wait(60) == 0
        assert scalp.wait() == 0, scalp.stderr
    finally:
        work.kill()
    assert did["pid_max"] == restore_pid_max
    assert len(did["beyond"]) == n and all(p >= did["pid_max"] for p in did["beyond"]), did
    assert did["within"] < did["pid_max"], did
    procs = {p["process_pid"]: p for p in rows(out, "processes")}
    assert procs[did["within"]]["process_traced_reason"] == "fork"
    assert not set(did["beyond"]) & set(procs), did
    totals = syscall_totals(out)
    assert totals[(did["within"], "getppid")][0] == 10
    assert not {p for p, _ in totals} & set(did["beyond"])
    assert drops(out) == {("process", "pid_beyond_pid_max"): n}


# A server reading one request per connection in turn over K keep-alive connections, R rounds.
KEEP_ALIVE = r"""
import os, socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print("ready", os.getpid(), srv.getsockname()[1], flush=True)
k, r = map(int, sys.stdin.readline().split())
conns = [srv.accept()[0] for _ in range(k)]
ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
for _ in range(r):
    for c in conns:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(4096)
        c.sendall(ok)
for c in conns:
    c.close()
print("done", flush=True)
sys.stdin.readline()
"""


def test_socket_verdicts_evicted_at_a_request_start_lose_nothing(out):
    """SOCKET_VERDICTS is an LRU map: full, it forgets the least recently used socket's verdict
    instead of failing (so `sockets socket_map_full` counts only a failed update, which cannot be
    forced). Six connections take turns over two entries, so every request comes on a socket
    whose verdict was forgotten: classified again from the request's first bytes, each is
    counted, and nothing is dropped. (Forgotten in the middle of a message, the rest is misread:
    README, "What can be lost".)"""
    k, r = 6, 10
    work = subprocess.Popen([PYTHON, "-c", KEEP_ALIVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        _, pid, port = work.stdout.readline().split()
        pid = int(pid)
        scalp = Scalp(out, "--pid", pid, "--interval", "200ms", "--tracers", "syscalls,http",
                      "--map-entries", "SOCKET_VERDICTS=2").wait_ready()
        work.stdin.write(f"{k} {r}\n")
        work.stdin.flush()
        clients = [socket.create_connection(("127.0.0.1", int(port))) for _ in range(k)]
        for i in range(r):
            for j, c in enumerate(clients):
                c.sendall(f"GET /c{j}/r{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                got = b""
                while not got.endswith(b"ok"):
                    got += c.recv(4096)
        assert work.stdout.readline() == "done\n"
        for c in clients:
            c.close()
        work.stdin.close()
        assert work.wait(60) == 0
        assert scalp.wait() == 0, scalp.stderr
    finally:
        work.kill()
    served = [x for x in rows(out, "http_requests", pid) if x["direction"] == "server"]
    assert sum(x["calls"] for x in served) == k * r, served
    assert drops(out) == {}
