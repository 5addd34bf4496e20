"""scalp-bpf must not disturb other users of the same tracepoints."""
import platform
import re
import signal
import subprocess

import pytest

from conftest import PYTHON, WORKLOADS, Held, Scalp, syscall_totals


def perf_count(n):
    """`perf stat -e raw_syscalls:sys_enter` of a process making n getppid calls."""
    r = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter,raw_syscalls:sys_exit", "--",
                        PYTHON, str(WORKLOADS / "sysc.py"), "--getppid", str(n)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    counts = {}
    for line in r.stderr.splitlines():
        m = re.match(r"^(\d+),[^,]*,(raw_syscalls:sys_\w+)", line)
        if m:
            counts[m.group(2)] = int(m.group(1))
    return counts


def test_perf_still_counts_the_tracepoints_while_scalp_bpf_runs(out):
    alone = perf_count(50000)
    work = Held("--getppid", 5000)
    scalp = Scalp(out, "--pid", work.pid).wait_ready()
    beside = perf_count(50000)
    work.go()
    work.finish()
    assert scalp.wait() == 0
    # perf sees every syscall of its own process as before (not 0, not fewer)…
    for event in ["raw_syscalls:sys_enter", "raw_syscalls:sys_exit"]:
        assert beside[event] >= 50000
        assert abs(beside[event] - alone[event]) < 1000, (alone, beside)
    # …and scalp-bpf still counted its own target exactly.
    assert syscall_totals(out, work.pid)[(work.pid, "getppid")][0] == 5000


def test_two_runs_at_once_on_different_targets(tmp_path):
    a = Held("--getppid", 3000)
    b = Held("--getppid", 4000)
    sa = Scalp(tmp_path / "a", "--pid", a.pid).wait_ready()
    sb = Scalp(tmp_path / "b", "--pid", b.pid).wait_ready()
    a.go()
    b.go()
    a.finish()
    b.finish()
    assert sa.wait() == 0 and sb.wait() == 0
    assert set(syscall_totals(tmp_path / "a")) == {k for k in syscall_totals(tmp_path / "a") if k[0] == a.pid}
    assert syscall_totals(tmp_path / "a", a.pid)[(a.pid, "getppid")][0] == 3000
    assert syscall_totals(tmp_path / "b", b.pid)[(b.pid, "getppid")][0] == 4000
    assert all(pid == b.pid for pid, _ in syscall_totals(tmp_path / "b"))


GETPPID_NR = {"x86_64": 110, "aarch64": 173}[platform.machine()]


def test_bpftrace_on_the_same_tracepoints_counts_exactly_beside_scalp_bpf(out):
    work = Held("--getppid", 7000)
    scalp = Scalp(out, "--pid", work.pid).wait_ready()
    # bpftrace's perf-event tracepoint programs, beside scalp-bpf's tp_btf programs on the same
    # tracepoints.
    script = ('BEGIN { printf("ready\\n"); } '
              f"tracepoint:raw_syscalls:sys_enter /pid == {work.pid} && args->id == {GETPPID_NR}/ {{ @enter = count(); }} "
              f"tracepoint:raw_syscalls:sys_exit /pid == {work.pid} && args->id == {GETPPID_NR}/ {{ @exit = count(); }}")
    bt = subprocess.Popen(["bpftrace", "-B", "line", "-e", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # "Attaching N probes..." comes before the probes are attached; BEGIN runs after.
        lines = [bt.stdout.readline(), bt.stdout.readline()]
        assert lines[-1] == "ready\n", "".join(lines) + (bt.stderr.read() if bt.poll() is not None else "")
        work.go()
        assert work.finish() == 0
        bt.send_signal(signal.SIGINT)
        printed, err = bt.communicate(timeout=60)
    finally:
        bt.kill()
    assert scalp.wait() == 0, scalp.stderr
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"@(\w+): (\d+)", printed)}
    assert counts == {"enter": 7000, "exit": 7000}, printed + err
    assert syscall_totals(out, work.pid)[(work.pid, "getppid")][0] == 7000
