"""Durability, bounds and a clean exit: `kill -9` at any moment loses at most the interval in
progress (the run's write-ahead log is read by `summary` at once and sealed by `recover`, every
closed interval exact by the workload's own clock); a full disk or a removed output directory is
one clear error (exit 7) with what was written before still readable; `--max-size` stops a run
by itself; and after any exit no program or map of the run stays loaded in the kernel."""
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import threading
import time

import pyarrow.parquet as pq
import pytest

from bpfmaps import held_ids
from conftest import PYTHON, ROOT, SCALP, WORKLOADS, Held, Scalp, run_json, run_scalp, wait_for
from intervals import by_interval, check_contiguous, check_each_interval

STEADY = WORKLOADS / "steady.py"
INTERVAL = 0.1
# What may pass between an interval's end and its commit to the log (reading the maps, building
# and appending the batches) plus a tick that runs a little late on a busy machine. The commit is
# one write to the page cache (the fsync is another thread's), so this stays a fraction of an
# interval: parts closed every second interval would fail the bound.
SLACK = 0.08
# From run.json to the first interval's start: the sink creates and fsyncs its log, the loop
# sets up its rings.
STARTUP = 0.3
TRIALS = 24
SEED = int(os.environ.get("SCALP_DURABILITY_SEED", time.time_ns() % 2**32))


def our_program_names():
    """The kernel names of scalp-bpf's programs (the functions under #[tp_btf] & co. in
    tracer-ebpf, cut to the kernel's 15 characters)."""
    names = set()
    for src in (ROOT / "tracer-ebpf" / "src").rglob("*.rs"):
        for m in re.finditer(r"#\[(?:tp_btf|tracepoint|raw_tracepoint|btf_tracepoint)\b[^\]]*\]\s*"
                             r"(?:pub\s+)?fn\s+(\w+)", src.read_text()):
            names.add(m.group(1)[:15])
    assert {"sys_enter", "sys_exit", "sched_process_e"} <= names, names
    return names


OUR_PROGRAMS = our_program_names()


def loaded():
    """{id: name} of every BPF program and map in the kernel now."""
    def show(kind):
        r = subprocess.run(["bpftool", kind, "show", "--json"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return {o["id"]: o.get("name", "") for o in json.loads(r.stdout or "[]")}
    return show("prog"), show("map")


def held_by_anyone():
    progs = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            progs |= held_ids(pid)[0]
    return progs


class Run:
    """A scalp-bpf run whose kernel objects are followed by id: those its process holds (read
    from /proc while it runs) and, for a process killed while still loading, any program with
    one of our names that appeared during the run and that no process holds."""

    def __init__(self, out, *args):
        self.before = set(loaded()[0])
        self.scalp = Scalp(out, *args)
        self.progs, self.maps = set(), set()

    def note_ids(self):
        progs, maps = held_ids(self.scalp.proc.pid)
        self.progs |= progs
        self.maps |= maps

    def assert_nothing_left(self, timeout=10):
        """Everything the run loaded is gone from the kernel (freed once the last reference
        closes, which may take a moment after exit)."""
        assert self.scalp.proc.poll() is not None
        deadline = time.monotonic() + timeout
        suspects = None
        while True:
            progs, maps = loaded()
            left = {i: progs[i] for i in self.progs & progs.keys()}
            left_maps = {i: maps[i] for i in self.maps & maps.keys()}
            if suspects is None and not left:
                # Programs that appeared since the run started, with our names, that no process
                # holds: leaked by this run, or another run's exiting this very moment (those
                # go away; a leak does not).
                held = held_by_anyone()
                suspects = {i for i, n in progs.items()
                            if i not in self.before and n in OUR_PROGRAMS and i not in held}
            orphans = {i: progs[i] for i in (suspects or set()) & progs.keys()}
            if not left and not left_maps and suspects is not None and not orphans:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"still loaded {timeout}s after scalp-bpf exited: programs {left}, "
                                     f"maps {left_maps}, unheld programs {orphans}")
            time.sleep(0.1)


def visible_parts(out):
    return sorted(pathlib.Path(out).rglob("*.parquet"))


def check_readable(out):
    """Every visible part reads; part names in each table are part-N.parquet, N increasing with
    the period that wrote it; whole tables read as datasets (hidden files are ignored)."""
    out = pathlib.Path(out)
    for part in visible_parts(out):
        assert not part.name.startswith("."), part
        pq.read_table(part)
    for table in (out.iterdir() if out.exists() else []):
        if table.is_dir() and not table.name.startswith("."):
            names = sorted(p.name for p in table.glob("*.parquet"))
            assert all(re.fullmatch(r"part-\d{8}\.parquet", n) for n in names), names
            if names:
                pq.read_table(table)


def getppid_by_summary(out):
    """getppid calls of a run by `scalp-bpf summary --format json` (every group)."""
    r = run_scalp("summary", out, "--format", "json", "--top", "1000")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    return doc, sum(row["calls"] for t in doc["tables"] if t["table"] == "syscalls"
                    for g in t["groups"] for row in g["rows"] if row["syscall_name"] == "getppid")


def stderr_lines(text):
    return [line for line in text.strip().splitlines() if line]


def assert_one_error(stderr, *needles):
    lines = stderr_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("scalp-bpf: "), lines[0]
    assert "panicked" not in stderr and "backtrace" not in stderr.lower(), stderr
    for n in needles:
        assert n in lines[0], lines[0]


def intervals_of(out, table, pid):
    """{(interval_start_ns, interval_end_ns): {name: calls}} of one process in one table."""
    return by_interval(out, table, pid)


def stop_steady(work):
    """Ends a steady workload and returns its getppid timestamps (before, after)."""
    work.proc.send_signal(signal.SIGUSR1)
    line = work.readline()
    assert work.finish() == 0
    log = json.loads(line)
    return log["getppid_before"], log["getppid_after"]


# ---------------------------------------------------------------------------------------------
# kill -9


def check_after_kill(out, work_pid, before, after, kill_ns, ready):
    if not (out / "run.json").exists():
        # Killed while loading, before tracing began: no output, or an empty directory.
        assert ready is None
        assert not out.exists() or not list(out.rglob("*")), list(out.rglob("*"))
        return 0
    # The unrecovered run reads at once: sealed parts plus the committed intervals of its log.
    doc, unrecovered = getppid_by_summary(out)
    r = run_scalp("recover", out)
    assert r.returncode == 0, r.stderr
    assert len(stderr_lines(r.stderr)) == 1, r.stderr
    r = run_scalp("recover", out)
    assert r.returncode == 0 and "nothing to recover" in r.stderr, r.stderr
    check_readable(out)
    assert not list(out.rglob(".*")), "hidden files left after recover"
    sys_iv = intervals_of(out, "syscalls", work_pid)
    io_iv = intervals_of(out, "fileio", work_pid)
    assert getppid_by_summary(out)[1] == unrecovered == sum(c.get("getppid", 0) for c in sys_iv.values())
    if not sys_iv:
        # Nothing closed yet: only allowed if the kill came before the first interval could end
        # (run.json is written a moment before the loop starts: the log is created and synced
        # in between).
        if ready is not None:
            assert kill_ns - ready < (INTERVAL + SLACK + STARTUP) * 1e9, "no interval survived"
        assert not io_iv
        return 0
    spans = sorted(sys_iv)
    check_contiguous(spans, before, after)
    # Every closed interval holds exactly the calls made in it, by the workload's clock.
    check_each_interval(sys_iv, before, after)
    # An interval is committed for every table at once: both tables have the same intervals.
    assert set(sys_iv) == set(io_iv), set(sys_iv) ^ set(io_iv)
    # One write per getppid: the two tables of a closed interval agree. Every tracer's maps are
    # read at one instant (one after the other, microseconds apart, before any batch is built):
    # a write (one per ~2 ms) made between the two reads lands in the next interval of one of
    # them, at most one at the last boundary; earlier boundaries cancel out in the sum.
    writes = sum(c.get("write", 0) for c in sys_iv.values())
    counted = sum(c.get("getppid", 0) for c in sys_iv.values())
    assert abs(writes - counted) <= 1, (writes, counted)
    io_writes = sum(c.get("write:other", 0) for c in io_iv.values())
    assert abs(io_writes - writes) <= 1, (io_writes, writes)
    # What was lost: at most the interval in progress.
    last = spans[-1][1]
    lost = (kill_ns - last) / 1e9
    print(f"lost {lost:.3f}s = interval + {lost - INTERVAL:+.3f}s")
    assert lost < INTERVAL + SLACK, f"lost {lost:.3f}s"
    return len(spans)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_a_random_moment_loses_at_most_the_interval_in_progress(tmp_path, trial):
    rng = random.Random(f"{SEED}-{trial}")
    print(f"seed {SEED} (SCALP_DURABILITY_SEED={SEED} reproduces), trial {trial}")
    out = tmp_path / "run"
    work = Held("--sleep", 0.002, script=STEADY)
    run = None
    try:
        run = Run(out, "--pid", work.pid, "--interval", f"{int(INTERVAL * 1000)}ms")
        early = rng.random() < 0.25
        ready = None
        if early:
            # While loading and starting: anywhere in the first half second.
            work.go()
            deadline = time.monotonic() + rng.uniform(0, 0.5)
            while time.monotonic() < deadline:
                run.note_ids()
                time.sleep(0.005)
            if (out / "run.json").exists():
                ready = time.time_ns()
        else:
            run.scalp.wait_ready()
            ready = time.time_ns()
            run.note_ids()
            assert run.progs and run.maps, "no BPF objects found for the run"
            work.go()
            time.sleep(rng.uniform(0, 3.0))
        run.note_ids()
        kill_ns = time.time_ns()
        run.scalp.proc.kill()
        assert run.scalp.wait() == -signal.SIGKILL
        before, after = stop_steady(work)
        print(f"killed {'while starting' if early else 'while tracing'} "
              f"{(kill_ns - (ready or kill_ns)) / 1e9:.3f}s after ready")
        n = check_after_kill(out, work.pid, before, after, kill_ns, ready)
        print(f"{n} complete intervals")
        run.assert_nothing_left()
    finally:
        work.kill()
        if run is not None and run.scalp.proc.poll() is None:
            run.scalp.proc.kill()
            run.scalp.proc.wait()


# ---------------------------------------------------------------------------------------------
# Normal and error exits unload everything


def test_nothing_stays_loaded_after_a_normal_exit(out):
    work = Held("--sleep", 0.002, script=STEADY)
    try:
        run = Run(out, "--pid", work.pid, "--interval", "100ms", "--duration", "1s")
        run.scalp.wait_ready()
        run.note_ids()
        assert run.progs and run.maps
        work.go()
        assert run.scalp.wait() == 0, run.scalp.stderr
        stop_steady(work)
    finally:
        work.kill()
    check_readable(out)
    assert run_json(out)["end_reason"] == "duration"
    run.assert_nothing_left()


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0755", "tmpfs", mnt], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=True)


def test_a_full_disk_stops_tracing_with_one_error_and_keeps_what_was_written(small_tmpfs, tmp_path):
    out = small_tmpfs / "run"
    # Many distinct rows per 10 ms interval, sealed every second: the 128 KiB file system fills
    # in seconds, while appending to the log or while sealing it.
    work = Held("--sleep", 0.001, "--distinct", 16, script=STEADY)
    try:
        run = Run(out, "--pid", work.pid, "--interval", "10ms", "--files", "--rotate", "1s")
        run.scalp.wait_ready()
        run.note_ids()
        work.go()
        code = run.scalp.wait(timeout=120)
        # The traced process did not notice.
        assert work.proc.poll() is None
        before, after = stop_steady(work)
    finally:
        work.kill()
    assert code == 7, run.scalp.stderr
    assert_one_error(run.scalp.stderr, "no space left", "tracing stopped")
    check_readable(out)
    assert not list(out.rglob(".*.inprogress")), "a part that could not be completed stayed behind"
    # What was committed before the disk filled reads at once (sealed parts and the log)…
    _, at_once = getppid_by_summary(out)
    # …and is sealed by recover once there is room (here: a copy on a larger file system).
    room = shutil.copytree(out, tmp_path / "room", symlinks=True)
    r = run_scalp("recover", room)
    assert r.returncode == 0, r.stderr
    check_readable(room)
    sys_iv = intervals_of(room, "syscalls", work.pid)
    assert len(sys_iv) >= 50, len(sys_iv)
    check_contiguous(sorted(sys_iv), before, after)
    check_each_interval(sys_iv, before, after)
    assert sum(c.get("getppid", 0) for c in sys_iv.values()) == at_once > 0
    meta = run_json(out)
    assert meta["run_end"] is None or meta["end_reason"].startswith("error")
    run.assert_nothing_left()


def test_a_full_disk_under_a_command_waits_for_it_and_exits_7(small_tmpfs, tmp_path):
    out = small_tmpfs / "run"
    tag = f"scalp-durability-{os.getpid()}-{time.time_ns()}"
    log = tmp_path / "work.json"
    scalp = Scalp(out, "--interval", "10ms", "--rotate", "1s", "--files", "--", PYTHON, STEADY, "--seconds", 6,
                  "--sleep", 0.001, "--distinct", 16, "--tag", tag, "--log", log)
    line = scalp.stderr_line("no space left", timeout=60)
    # Said when tracing stopped, while the command goes on untraced.
    assert command_running(tag), line
    assert scalp.wait(timeout=60) == 7, scalp.stderr
    assert not command_running(tag), "scalp-bpf exited before its command"
    assert_one_error(scalp.stderr, "no space left", "tracing stopped")
    # The command ran to its end.
    assert json.loads(log.read_text())["getppid_before"]
    check_readable(out)


def command_running(tag):
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if tag.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                    return True
            except OSError:
                pass
    return False


def test_a_removed_output_directory_is_one_error_and_exit_7(out):
    work = Held("--sleep", 0.002, script=STEADY)
    try:
        run = Run(out, "--pid", work.pid, "--interval", "50ms")
        run.scalp.wait_ready()
        run.note_ids()
        work.go()
        # A few intervals committed to the log.
        time.sleep(0.3)
        # rm -rf races with files being created: repeat until the directory is gone.
        while out.exists():
            subprocess.run(["rm", "-rf", out], capture_output=True)
        code = run.scalp.wait(timeout=60)
        assert work.proc.poll() is None
        stop_steady(work)
    finally:
        work.kill()
    assert code == 7, run.scalp.stderr
    assert_one_error(run.scalp.stderr, str(out), "removed", "tracing stopped")
    assert not out.exists(), "the output directory came back"
    run.assert_nothing_left()


# ---------------------------------------------------------------------------------------------
# --max-size


def dir_bytes(out):
    return sum(p.stat().st_size for p in pathlib.Path(out).rglob("*") if p.is_file())


class PeakSize:
    """The largest size a directory reached, sampled every 5 ms on a thread."""

    def __init__(self, out):
        self.out, self.peak, self.stop = out, 0, False
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, dir_bytes(self.out))
            except OSError:
                pass  # a file sealed or deleted while listed
            time.sleep(0.005)

    def finish(self):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, dir_bytes(self.out))
        return self.peak


def test_max_size_stops_a_run_by_itself_under_the_limit(out):
    # Each table's Parquet footer is about 6 KiB (its schema and column docs) and the run keeps
    # 8 KiB per table for the last ones: with 14 tables that is 112 KiB of a limit that must be
    # well above it for "not long before the limit" to mean anything.
    limit = 512 << 10
    work = Held("--sleep", 0.001, "--distinct", 16, script=STEADY)
    try:
        run = Run(out, "--pid", work.pid, "--interval", "10ms", "--max-size", "512K", "--rotate", "2s")
        run.scalp.wait_ready()
        peak = PeakSize(out)
        run.note_ids()
        work.go()
        code = run.scalp.wait(timeout=180)
        assert work.proc.poll() is None
        stop_steady(work)
    finally:
        work.kill()
    peak = peak.finish()
    assert code == 0, run.scalp.stderr
    lines = stderr_lines(run.scalp.stderr)
    assert [line for line in lines if "--max-size" in line] == [lines[0]], lines
    assert "512 KiB" in lines[0] and "tracing stopped" in lines[0], lines[0]
    assert "panicked" not in run.scalp.stderr
    check_readable(out)
    assert not list(out.rglob(".*")), "hidden files left"
    # Never past the limit, even while a period's log and the parts sealed from it coexist; and
    # not long before it: the limit is what ended the run.
    assert limit // 2 < peak <= limit, peak
    assert dir_bytes(out) <= peak
    meta = run_json(out)
    assert meta["end_reason"] == "max size" and meta["run_end"]
    run.assert_nothing_left()


def test_max_size_under_a_command_lets_it_finish_and_exits_with_its_code(out):
    tag = f"scalp-durability-{os.getpid()}-{time.time_ns()}"
    scalp = Scalp(out, "--interval", "10ms", "--max-size", "128K", "--", PYTHON, STEADY, "--seconds", 5,
                  "--sleep", 0.001, "--distinct", 16, "--exit", 3, "--tag", tag)
    line = scalp.stderr_line("--max-size", timeout=60)
    assert command_running(tag), line
    assert scalp.wait(timeout=60) == 3, scalp.stderr
    assert not command_running(tag)
    assert "panicked" not in scalp.stderr
    check_readable(out)
    assert dir_bytes(out) <= 128 << 10
    meta = run_json(out)
    assert meta["end_reason"] == "max size"
    assert meta["command_exit_code"] == 3


@pytest.mark.parametrize("value", ["big", "-1G", "12Q"])
def test_a_bad_max_size_is_a_usage_error(out, value):
    r = subprocess.run([SCALP, "run", "--output", out, "--max-size", value, "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert_one_error(r.stderr, "--max-size")
    assert not out.exists()
