"""`scalp-bpf top`, driven in a real terminal: a tmux of 80×24 (then larger), read back with
capture-pane. A held workload makes an exact number of getppid calls and failing openat calls
on cue; the screen must show exactly those counts (the syscalls view shows totals since top
started), and with --output the tables written must agree. Keys switch views, sort, filter and
pause; q, Ctrl-C, SIGTERM and SIGINT end top with exit 0, the terminal restored (raw mode off,
the alternate screen left) and nothing left in the kernel (conftest's autouse check follows the
scalp-bpf inside tmux). Without a TTY: one line, exit 10."""
import json
import os
import re
import shlex
import signal
import subprocess
import time
import uuid

import pytest

from conftest import SCALP, Held, rows, run_json, run_scalp, wait_for
from kernel_objects import children, exe

GETPPID = 4321
FAIL_OPENAT = 321
NAME = "scalp-top-wl"


class Tmux:
    """scalp-bpf top in a detached tmux session of its own server (socket), in a shell that
    says afterwards whether the terminal's settings came back and with which code top exited."""

    def __init__(self, watch, *args, width=80, height=24):
        self.socket = f"scalp-top-{uuid.uuid4().hex[:8]}"
        self.session = "top"
        top = " ".join(shlex.quote(str(a)) for a in [SCALP, "top", *args])
        script = (f'before=$(stty -g); {top}; code=$?; after=$(stty -g); '
                  f'[ "$before" = "$after" ] && echo "tty restored"; echo "top exit=$code"; sleep 600')
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), "sh", "-c", script)
        self.shell = int(self.tmux("list-panes", "-t", self.session, "-F", "#{pane_pid}").split()[0])
        watch.follow(self.shell)
        wait_for(lambda: self.scalp() is not None, 30, "scalp-bpf to start in tmux")
        self.pid = self.scalp()

    def tmux(self, *args):
        r = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def scalp(self):
        for pid in children(self.shell):
            if exe(pid) == os.path.realpath(SCALP):
                return pid
        return None

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def lines(self):
        return self.screen().splitlines()

    def wait_screen(self, predicate, what, timeout=30):
        last = [""]

        def check():
            last[0] = self.screen()
            return predicate(last[0])
        try:
            wait_for(check, timeout, what)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; the screen:\n{last[0]}")
        return last[0]

    def keys(self, *keys):
        self.tmux("send-keys", "-t", self.session, *keys)

    def pane(self, fmt):
        return self.tmux("display-message", "-p", "-t", self.session, fmt).strip()

    def ended(self, timeout=30):
        """Waits for top to exit; returns its exit code, checking the terminal came back."""
        screen = self.wait_screen(lambda s: "top exit=" in s, "top to exit", timeout)
        code = int(re.search(r"top exit=(\d+)", screen).group(1))
        assert "tty restored" in screen, f"the terminal's settings were not restored:\n{screen}"
        assert self.pane("#{alternate_on}") == "0", "still on the alternate screen"
        assert self.pane("#{cursor_flag}") == "1", "the cursor is still hidden"
        return code

    def close(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux_sessions():
    made = []
    yield made
    for t in made:
        t.close()


def start(watch, made, *args, **kw):
    t = Tmux(watch, *args, **kw)
    made.append(t)
    # The first frame is drawn once the targets are marked: tracing is on from here.
    t.wait_screen(lambda s: "scalp-bpf top" in s, "top's first frame")
    return t


def row(screen, first):
    """The cells of the screen line whose first cell is `first`."""
    for line in screen.splitlines():
        cells = line.split()
        if cells and cells[0] == first:
            return cells
    return None


def syscall_row(screen, name):
    """(calls, errors) of a syscall in the syscalls view's detail table:
    syscall, calls/s, err/s, calls, errors, p99."""
    cells = row(screen, name)
    if cells is None or len(cells) != 6:
        return None
    return int(cells[3]), int(cells[4])


def test_top_shows_exact_counts_switches_views_and_quits(nothing_left_in_the_kernel, tmux_sessions, tmp_path):
    out = tmp_path / "run"
    w = Held("--comm", NAME, "--getppid", GETPPID, "--fail-openat", FAIL_OPENAT, "--hold-after")
    try:
        t = start(nothing_left_in_the_kernel, tmux_sessions, "--pid", w.pid, "--interval", "250ms",
                  "--output", out)
        assert t.pane("#{window_width}x#{window_height}") == "80x24"
        # The process is listed under its service (a PID target is named after its process).
        t.wait_screen(lambda s: re.search(rf"^\s+{NAME}\s+{w.pid}\s", s, re.M), "the process row")
        assert re.search(rf"^{NAME} \[1\]", t.screen(), re.M), t.screen()
        w.go()
        assert w.readline().startswith("done ")
        screen = t.wait_screen(lambda s: syscall_row(s, "getppid") == (GETPPID, 0)
                               and (syscall_row(s, "openat") or (0, 0))[1] == FAIL_OPENAT,
                               f"getppid {GETPPID} calls and openat {FAIL_OPENAT} errors")
        # A few intervals later: still exactly that (nothing counted twice).
        time.sleep(1.0)
        screen = t.screen()
        assert syscall_row(screen, "getppid") == (GETPPID, 0), screen
        calls, errors = syscall_row(screen, "openat")
        assert errors == FAIL_OPENAT and calls >= FAIL_OPENAT, screen
        # Every line fits the 80 columns.
        assert all(len(line) <= 80 for line in screen.splitlines()), screen
        assert "drops 0" in screen, screen
        # The machine's last interval (the system tables) under the header.
        assert re.search(r"^machine: CPU usr \d+% sys \d+% io \d+% st \d+%  load \d+\.\d\d", screen,
                         re.M), screen

        # Views.
        for key, title in [("2", "descriptor I/O"), ("3", "SQL fingerprints"), ("4", "HTTP routes"),
                           ("5", "RPC (direction kind method)"), ("d", "everything that could not be recorded"),
                           ("1", "system calls")]:
            t.keys(key)
            t.wait_screen(lambda s: title in s, f"view {key} ({title})", timeout=10)
        # The files view: the workload wrote "done PID\n" to its stdout pipe.
        t.keys("2")
        t.wait_screen(lambda s: row(s, "pipe") is not None, "the pipe write in the files view", 10)
        t.keys("1")
        # Sort: the detail table sorts by calls, then `s` moves to errors.
        t.wait_screen(lambda s: "calls▼" in s, "the sort mark on calls", 10)
        t.keys("s")
        t.wait_screen(lambda s: "errors▼" in s, "the sort mark on errors", 10)
        # Filter: nothing matches, then cleared.
        t.keys("/", "n", "o", "m", "a", "t", "c", "h", "Enter")
        t.wait_screen(lambda s: "no process matches the filter" in s, "the filter", 10)
        t.keys("Escape")
        t.wait_screen(lambda s: syscall_row(s, "getppid") == (GETPPID, 0), "the filter cleared", 10)
        # Pause.
        t.keys("p")
        t.wait_screen(lambda s: "PAUSED" in s, "PAUSED", 10)
        t.keys("p")
        t.wait_screen(lambda s: "PAUSED" not in s, "unpaused", 10)
        # Scales up: the tables take the width.
        t.tmux("resize-window", "-t", t.session, "-x", "160", "-y", "48")
        t.wait_screen(lambda s: any(len(line) > 120 and "system calls" in line for line in s.splitlines()),
                      "the 160-column layout", 10)

        t.keys("q")
        assert t.ended() == 0
    finally:
        w.kill()
    # --output wrote the same trace: its syscalls table agrees with the screen.
    calls = sum(r["calls"] for r in rows(out, "syscalls", w.pid) if r["syscall_name"] == "getppid")
    errors = sum(r["errors"] for r in rows(out, "syscalls", w.pid) if r["syscall_name"] == "openat")
    assert (calls, errors) == (GETPPID, FAIL_OPENAT)
    assert run_json(out)["end_reason"] == "quit"


@pytest.mark.parametrize("how", ["ctrl-c", "SIGTERM", "SIGINT"])
def test_top_ends_cleanly(nothing_left_in_the_kernel, tmux_sessions, how):
    w = Held("--comm", NAME, "--hold-after")
    try:
        t = start(nothing_left_in_the_kernel, tmux_sessions, "--pid", w.pid)
        t.wait_screen(lambda s: re.search(rf"^\s+{NAME}\s+{w.pid}\s", s, re.M), "the process row")
        if how == "ctrl-c":
            t.keys("C-c")
        else:
            os.kill(t.pid, getattr(signal, how))
        assert t.ended() == 0
        # The traced process is untouched.
        assert w.proc.poll() is None
    finally:
        w.kill()


def test_top_without_a_terminal():
    w = Held("--hold-after")
    try:
        r = run_scalp("top", "--pid", w.pid)
        assert (r.returncode, r.stderr) == (
            10, "scalp-bpf: top needs a terminal: standard output is not a TTY "
                "(use `scalp-bpf run` to record to files)\n")
        assert r.stdout == ""
        r = run_scalp("top")
        assert (r.returncode, r.stderr) == (2, "scalp-bpf: nothing to trace: give --pid PID|NAME\n")
    finally:
        w.kill()


def test_top_sql_view_counts_statements_per_fingerprint(nothing_left_in_the_kernel, tmux_sessions, mariadb):
    """A real MariaDB and PyMySQL: the SQL view's fingerprints carry exactly the statements the
    workload sent, and the failed ones as errors."""
    from conftest import WORKLOADS
    before = mariadb.status()
    w = Held("mysql", "--port", mariadb.port, "--select", 700, "--failed", 30, script=str(WORKLOADS / "sql.py"))
    try:
        t = start(nothing_left_in_the_kernel, tmux_sessions, "--pid", w.pid, "--sql-port", mariadb.port,
                  "--interval", "250ms")
        t.keys("3")
        t.wait_screen(lambda s: "SQL fingerprints" in s, "the SQL view")
        w.go()
        done = json.loads(w.readline())
        assert (done["select"], done["failed"]) == (700, 30)

        def fingerprint(screen, prefix):
            # fingerprint (cut to the column), stmts/s, stmts, errors, p99
            for line in screen.splitlines():
                if line.startswith(prefix):
                    cells = line.split()
                    return int(cells[-3]), int(cells[-2])
            return None
        screen = t.wait_screen(lambda s: fingerprint(s, "SELECT id, v FROM scalp_items WHERE") == (700, 0)
                               and fingerprint(s, "SELEC ? FROM nowhere") == (30, 30),
                               "700 SELECTs and 30 failed statements")
        assert w.finish() == 0
        # The server's own count agrees.
        assert mariadb.status()["Com_select"] - before["Com_select"] == 700
        t.keys("q")
        assert t.ended() == 0
    finally:
        w.kill()
