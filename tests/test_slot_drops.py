"""The kernel tables indexed by a mask (block requests in flight, syscalls in flight) count what
they cannot hold. Each table is made small on purpose (`run --map-entries MAP=N`, hidden and
test-only; the programs' masks follow the size) and each loss is checked against an independent
count: the device's own counters (/sys/block) and fio's report, or a second scalp-bpf with the
normal sizes tracing the same process at the same time. Counted plus dropped must equal what
happened, exactly. And the block requests still in flight when a run stops are counted, as many
as the device says."""
import contextlib
import json
import subprocess

from conftest import PYTHON, Scalp, absent_table, rows, run_json, run_scalp, syscall_totals, wait_for
from test_blockio import disk_stat, loop_ext4, loopfs, prepare  # noqa: F401 (loopfs is a fixture)
from test_map_drops import beside, drops, finish

BLOCK = 4096
# fio writes 4 KiB and skips 4 KiB over a file twice the bytes written (no two requests are
# adjacent, so none merge: a merged request would complete as one with the other), 64 at a time:
# one io_submit queues 64 requests under one plug before the device sees any of them.
WRITES = 512
FIO = ["fio", "--name=inflight", "--rw=write:4k", f"--bs={BLOCK}", "--direct=1", "--ioengine=libaio",
       "--iodepth=64", "--iodepth_batch_submit=64", "--iodepth_batch_complete_min=64",
       f"--size={2 * WRITES * BLOCK}", f"--io_size={WRITES * BLOCK}", "--thread", "--output-format=json"]

# Runs fio once untraced on a small file (so the pages of fio and its libraries are cached: a
# traced read of them would be one more request, on another device, for the table to drop), waits
# for 'go', runs fio on argv[1] (a child: traced from its fork), prints fio's JSON report.
RUN_FIO = r"""
import os, subprocess, sys
warm = [a for a in sys.argv[2:] if not a.startswith(("--size=", "--io_size="))]
subprocess.run(warm + ["--size=64k", "--filename=" + sys.argv[1] + ".warm"], check=True,
               capture_output=True)
os.unlink(sys.argv[1] + ".warm")
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
report = subprocess.run(sys.argv[2:] + ["--filename=" + sys.argv[1]], check=True, capture_output=True,
                        text=True).stdout
print(report.replace("\n", " "), flush=True)
"""


def write_merges(dev):
    return int(open(f"/sys/block/{dev}/stat").read().split()[5])


def fio_beside(tmp_path, path, dev, *small_args):
    """fio's writes on `dev` under two scalp-bpf runs at once, one with `small_args`, one with
    the normal settings: (the two runs, the small one's Scalp). The normal run is the truth for
    every device (a traced process's stray request elsewhere, a page of a library read from the
    system disk, is counted there too); on `dev` it must match fio and the device exactly."""
    work = subprocess.Popen([PYTHON, "-c", RUN_FIO, str(path), *FIO], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pid = int(work.stdout.readline().split()[1])
        common = ["--pid", pid, "--interval", "200ms", "--tracers", "syscalls,blockio"]
        small = Scalp(tmp_path / "small", *common, *small_args).wait_ready()
        normal = Scalp(tmp_path / "normal", *common).wait_ready()
        before, merges = disk_stat(dev), write_merges(dev)
        work.stdin.write("go\n")
        work.stdin.flush()
        report = json.loads(work.stdout.readline())
        work.stdin.close()
        assert work.wait(60) == 0
        after = disk_stat(dev)
        finish(small, normal)
    finally:
        work.kill()
    assert write_merges(dev) == merges, "requests merged"
    reads, _, writes, _ = (b - a for a, b in zip(before, after))
    assert report["jobs"][0]["write"]["total_ios"] == WRITES and (reads, writes) == (0, WRITES), \
        (report["jobs"][0]["write"]["total_ios"], reads, writes, "the device saw other I/O")
    truth = tmp_path / "normal"
    assert requests(truth, dev) == WRITES and drops(truth) == {}
    return tmp_path / "small", truth, small


def requests(out, dev=None):
    """Requests the blockio table counted, every process together (fio is the workload's
    child): write requests on `dev`, or every request on every device."""
    if absent_table(out, "blockio"):
        return 0
    return sum(r["requests"] for r in rows(out, "blockio")
               if dev is None or (r["device"] == dev and r["op"] == "write"))


def test_a_full_block_inflight_table_counts_every_request_it_could_not_track(tmp_path, loopfs):
    """One set of 4 entries, 64 requests queued at once: the requests it could not track are
    drops, and with the ones counted they make what the normal-sized run counted, which is what
    fio did and what the device completed."""
    mnt, dev = loopfs
    path = mnt / "inflight.dat"
    prepare(path, 2 * WRITES * BLOCK)
    small, truth, scalp = fio_beside(tmp_path, path, dev, "--map-entries", "BLOCK_INFLIGHT=4")
    counted, want = requests(small), requests(truth)
    d = drops(small)
    print(f"{requests(small, dev)} of {WRITES} fio writes counted; {counted} + {d} of {want}")
    # 64 queued at once, 4 tracked: most of each batch is lost (not a test that cannot fail).
    assert 0 < requests(small, dev) < WRITES - 64
    assert d == {("blockio", "inflight_map_full"): want - counted}, (d, want, counted)
    assert f"scalp-bpf: dropped {want - counted} (blockio inflight_map_full)" in scalp.stderr


def test_stale_inflight_entries_are_counted_and_not_charged(tmp_path, loopfs):
    """A request whose in-flight entry is older than the stale limit is not charged: with the
    limit at 0 (test-only `--block-stale-ms`) every request is stale, reclaimed by a later one
    while in flight or found stale at completion; each is one drop, none is counted twice."""
    mnt, dev = loopfs
    path = mnt / "stale.dat"
    prepare(path, 2 * WRITES * BLOCK)
    small, truth, _ = fio_beside(tmp_path, path, dev, "--block-stale-ms", 0)
    assert requests(small) == 0
    assert drops(small) == {("blockio", "stale_inflight_entry"): requests(truth)}


# Two threads on one CPU (so the kernel programs of their syscalls never run at the same moment)
# play ping-pong over two pipes: while one waits in read, the other enters write. The helper's
# end is awaited through a pidfd of the thread, which becomes readable only after the thread has
# left the kernel's exit path (so no syscall of the main thread runs while the helper is inside
# `exit`, a call no run times).
PING_PONG = r"""
import json, os, select, sys, threading
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
rounds = int(sys.argv[1])
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
a_r, a_w = os.pipe()
b_r, b_w = os.pipe()

def helper():
    for _ in range(rounds):
        os.read(a_r, 1)
        os.write(b_w, b"y")

t = threading.Thread(target=helper)
t.start()
PIDFD_THREAD = os.O_EXCL
pidfd = os.pidfd_open(t.native_id, PIDFD_THREAD)
for _ in range(rounds):
    os.write(a_w, b"x")
    os.read(b_r, 1)
select.select([pidfd], [], [])
t.join()
print(json.dumps({"rounds": rounds}), flush=True)
sys.stdin.readline()
"""


def test_a_shared_syscall_slot_counts_every_latency_it_lost(tmp_path):
    """One in-flight slot for every thread: a thread entering a syscall while another waits in
    one overwrites its start time. Each overwrite is one `latency_slot_collision`, and exactly the
    calls the normal-sized run timed and the one-slot run did not."""
    rounds = 200
    work = subprocess.Popen([PYTHON, "-c", PING_PONG, str(rounds)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pid = int(work.stdout.readline().split()[1])
        small, normal = beside(tmp_path, pid, ["SYSCALL_INFLIGHT=1"], "--tracers", "syscalls",
                               "--syscall-latency", "exact")
        work.stdin.write("go\n")
        work.stdin.flush()
        assert json.loads(work.stdout.readline()) == {"rounds": rounds}
        work.stdin.close()
        assert work.wait(60) == 0
        finish(small, normal)
    finally:
        work.kill()
    got, want = syscall_totals(tmp_path / "small", pid), syscall_totals(tmp_path / "normal", pid)
    # Counts do not depend on the slots; only timings are lost.
    assert {k: c[:2] for k, c in got.items()} == {k: c[:2] for k, c in want.items()}
    assert want[(pid, "write")][0] >= 2 * rounds and want[(pid, "read")][0] >= 2 * rounds
    # The normal run timed every call but the read under way when tracing began and the exits.
    untimed = {k[1]: c[0] - c[2] for k, c in want.items() if c[0] != c[2]}
    assert untimed == {"read": 1, "exit": 1, "exit_group": 1}, untimed
    lost = sum(want[k][2] - got[k][2] for k in want)
    print(f"{lost} latencies lost in {rounds} rounds")
    assert lost >= rounds // 2
    assert drops(tmp_path / "small") == {("syscalls", "latency_slot_collision"): lost}
    assert drops(tmp_path / "normal") == {}


def test_a_masked_table_of_the_wrong_size_is_refused(out):
    """The programs index these tables by a mask: a size of another shape is one line, exit 2."""
    for arg, shape in (("SYSCALL_INFLIGHT=3", "2^k"), ("BLOCK_INFLIGHT=6", "4 × 2^k")):
        r = run_scalp("run", "--output", out, "--tracers", "syscalls,blockio", "--map-entries", arg,
                      "--", "true")
        assert r.returncode == 2, r.stderr
        map_name = arg.split("=")[0]
        assert r.stderr == f"scalp-bpf: --map-entries {arg}: {map_name} must have {shape} entries\n"
        assert not out.exists()


# N threads each write one 4 KiB block with O_DIRECT (spaced: no two merge), all at once.
STUCK_WRITES = r"""
import mmap, os, sys, threading
path, n = sys.argv[1], int(sys.argv[2])
buf = mmap.mmap(-1, 4096)
buf.write(b"\xa5" * 4096)
fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
threads = [threading.Thread(target=os.pwrite, args=(fd, buf, 2 * i * 4096)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done", flush=True)
sys.stdin.readline()
"""


@contextlib.contextmanager
def inner_fs(outer, tmp_path):
    """An ext4 (no journal) on a loop device whose backing file is on `outer`: freezing `outer`
    holds every write to it in flight (the loop worker waits for the thaw). Yields (mount point,
    device name)."""
    mnt = tmp_path / "inner"
    with loop_ext4(outer / "inner.img", mnt, 32 << 20) as dev:
        yield mnt, dev


@contextlib.contextmanager
def frozen(fs):
    subprocess.run(["fsfreeze", "--freeze", fs], check=True)
    try:
        yield
    finally:
        subprocess.run(["fsfreeze", "--unfreeze", fs], check=True)


def test_requests_still_in_flight_at_the_end_are_counted(tmp_path, out, loopfs):
    """The traced writes in flight when scalp-bpf stops (held there by a frozen backing
    filesystem) are `blockio inflight_at_end`, exactly as many as the device says are in
    flight."""
    outer, _ = loopfs
    n = 5
    with inner_fs(outer, tmp_path) as (mnt, name):
        prepare(mnt / "stuck.dat", 2 * n * BLOCK)
        work = subprocess.Popen([PYTHON, "-c", STUCK_WRITES, str(mnt / "stuck.dat"), str(n)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            pid = int(work.stdout.readline().split()[1])
            scalp = Scalp(out, "--pid", pid, "--interval", "200ms", "--tracers",
                          "syscalls,blockio").wait_ready()

            def in_flight():
                return tuple(int(x) for x in open(f"/sys/block/{name}/inflight").read().split())

            with frozen(outer):
                work.stdin.write("go\n")
                work.stdin.flush()
                wait_for(lambda: in_flight() == (0, n), 30, f"{n} writes in flight on {name}")
                assert scalp.stop() == 0, scalp.stderr
                assert in_flight() == (0, n)
            assert work.stdout.readline() == "done\n"
            work.stdin.close()
            assert work.wait(60) == 0
        finally:
            work.kill()
    # Counted once, at the end: in run.json and on stderr (no interval holds it).
    assert run_json(out)["drops"] == [{"tracer": "blockio", "reason": "inflight_at_end", "count": n}]
    assert absent_table(out, "drops") or rows(out, "drops") == []
    assert f"scalp-bpf: dropped {n} (blockio inflight_at_end)" in scalp.stderr
    assert absent_table(out, "blockio") or not [r for r in rows(out, "blockio") if r["device"] == name]


# Dirties one page of each of N files and writes it out, then (on a second 'go') changes each
# file's times and fsyncs all N at once from N threads. Without a journal, ext4's fsync writes
# the inode through writeback_single_inode, waiting for the inode table block inside it.
FSYNC_WINDOWS = r"""
import os, sys, threading
base, n = sys.argv[1], int(sys.argv[2])
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
fds = [os.open(f"{base}/f{i}", os.O_RDWR | os.O_CREAT, 0o600) for i in range(n)]
for fd in fds:
    os.write(fd, b"x" * 4096)
    os.fdatasync(fd)
print("dirtied", flush=True)
sys.stdin.readline()
for i in range(n):
    os.utime(f"{base}/f{i}", (1000 + i, 1000 + i))
threads = [threading.Thread(target=os.fsync, args=(fd,)) for fd in fds]
for t in threads:
    t.start()
print("tids", *(t.native_id for t in threads), flush=True)
for t in threads:
    t.join()
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_full_flusher_owner_map_counts_every_writeback_window_it_could_not_hold(tmp_path, loopfs):
    """FLUSHER_OWNER holds, per task inside an inode's writeback (writeback_single_inode_start to
    its end), whose pages it writes. Four threads fsync four files the workload dirtied, each
    held inside its window by a frozen backing filesystem (their kernel stacks say so): a
    one-entry map holds one window and counts the other three; a normal-sized run beside holds
    all four."""
    outer, _ = loopfs
    n = 4
    with inner_fs(outer, tmp_path) as (mnt, _):
        work = subprocess.Popen([PYTHON, "-c", FSYNC_WINDOWS, str(mnt), str(n)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            pid = int(work.stdout.readline().split()[1])
            small, normal = beside(tmp_path, pid, ["FLUSHER_OWNER=1"], "--tracers", "syscalls,blockio")
            work.stdin.write("go\n")
            work.stdin.flush()
            assert work.stdout.readline() == "dirtied\n"
            with frozen(outer):
                work.stdin.write("go\n")
                work.stdin.flush()
                tids = work.stdout.readline().split()[1:]

                def in_window():
                    return [t for t in tids
                            if "__writeback_single_inode" in open(f"/proc/{pid}/task/{t}/stack").read()]

                wait_for(lambda: len(in_window()) == n, 30, f"{n} threads inside writeback_single_inode")
            assert work.stdout.readline() == "done\n"
            work.stdin.close()
            assert work.wait(60) == 0
            finish(small, normal)
        finally:
            work.kill()
    assert drops(tmp_path / "small") == {("blockio", "flusher_owner_map_full"): n - 1}
    assert drops(tmp_path / "normal") == {}
