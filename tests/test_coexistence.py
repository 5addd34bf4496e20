"""scalp-bpf must not disturb other users of the same tracepoints."""
import re
import shutil
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


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf not installed")
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
