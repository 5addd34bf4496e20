"""Choosing what to trace: PIDs and names (comm, argv[0], interpreter script, a comm cut to 15
characters), children, late starters, and names that match nothing."""
import os
import shutil
import subprocess

import pytest

from conftest import PYTHON, WORKLOADS, Held, Scalp, read_table, run_scalp, syscall_totals, wait_for


def traced(out):
    return {p["process_pid"]: p for p in read_table(out, "processes").to_pylist()}


def trace_name(out, name, work, *extra):
    """Traces `name` while `work` (held) makes its syscalls; returns the processes table."""
    scalp = Scalp(out, "--pid", name, "--interval", "200ms", *extra).wait_ready()
    work.go()
    assert work.finish() == 0
    assert scalp.stop() == 0, scalp.stderr
    return traced(out)


def test_by_comm(out):
    work = Held("--comm", "scalpcommtest", "--getppid", 1234)
    procs = trace_name(out, "scalpcommtest", work)
    assert set(procs) == {work.pid}
    assert procs[work.pid]["process_traced_reason"] == "target:scalpcommtest"
    assert syscall_totals(out, work.pid)[(work.pid, "getppid")][0] == 1234


def test_by_argv0(out):
    work = Held("--getppid", 321, argv0="/opt/fake/scalp-argv0-test")
    procs = trace_name(out, "scalp-argv0-test", work)
    assert set(procs) == {work.pid}
    assert syscall_totals(out, work.pid)[(work.pid, "getppid")][0] == 321


def test_by_interpreter_script(out, tmp_path):
    """`python3 /usr/bin/nova-api --config-file …` answers to nova-api."""
    script = tmp_path / "scalp-fake-api"
    shutil.copy(WORKLOADS / "sysc.py", script)
    work = Held("--getppid", 555, script=str(script))
    procs = trace_name(out, "scalp-fake-api", work)
    assert set(procs) == {work.pid}
    assert procs[work.pid]["process_name"].startswith("python")
    assert syscall_totals(out, work.pid)[(work.pid, "getppid")][0] == 555


def test_by_a_long_name_whose_comm_the_kernel_cut_to_15_characters(out):
    work = Held("--comm", "keystone-wsgi-public", "--getppid", 77)
    procs = trace_name(out, "keystone-wsgi-public", work)
    assert set(procs) == {work.pid}
    assert procs[work.pid]["process_name"] == "keystone-wsgi-p"


def test_children_forked_after_start_are_traced(out):
    work = Held("--comm", "scalpforktest", "--fork-getppid", 4321)
    scalp = Scalp(out, "--pid", "scalpforktest").wait_ready()
    work.go()
    child = int(work.readline().split()[1])
    assert work.finish() == 0
    assert scalp.stop() == 0
    procs = traced(out)
    assert procs[child]["process_traced_reason"] == "fork"
    assert procs[child]["process_parent_pid"] == work.pid
    assert syscall_totals(out, child)[(child, "getppid")][0] == 4321


def test_existing_children_of_a_pid_target_are_traced(out):
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        kids = []

        def both_started():
            kids[:] = [int(p) for p in open(f"/proc/{parent.pid}/task/{parent.pid}/children").read().split()]
            return len(kids) == 2 and all(open(f"/proc/{k}/comm").read().strip() == "sleep" for k in kids)

        # Without both children the check below would hold vacuously.
        wait_for(both_started, 10, "the shell's two sleep children", parent)
        scalp = Scalp(out, "--pid", parent.pid, "--duration", "1s").wait_ready()
        assert scalp.wait() == 0
    finally:
        parent.kill()
        subprocess.run(["pkill", "-P", str(parent.pid)])
        parent.wait()
    procs = traced(out)
    assert len(kids) == 2 and set(kids) <= set(procs), (kids, procs.keys())
    assert all(procs[k]["process_traced_reason"] == "descendant" for k in kids)
    assert all(procs[k]["process_parent_pid"] == parent.pid for k in kids)


def test_a_late_starter_is_picked_up_by_name(out):
    scalp = Scalp(out, "--pid", "scalplatestart", "--wait", verbose=True).wait_ready()
    work = Held("--comm", "scalplatestart", "--getppid", 999)
    # The name changed after exec (prctl), so the periodic rescan finds it; the log line says when.
    scalp.stderr_line(f"pid={work.pid}")
    work.go()
    assert work.finish() == 0
    assert scalp.stop() == 0
    procs = traced(out)
    assert procs[work.pid]["process_traced_reason"] == "target:scalplatestart"
    assert syscall_totals(out, work.pid)[(work.pid, "getppid")][0] == 999


def test_a_late_starter_is_picked_up_at_exec(out, tmp_path):
    script = tmp_path / "scalp-exec-starter"
    shutil.copy(WORKLOADS / "sysc.py", script)
    scalp = Scalp(out, "--pid", "scalp-exec-starter", "--wait", verbose=True).wait_ready()
    work = Held("--getppid", 888, script=str(script))
    scalp.stderr_line(f"pid={work.pid}")
    work.go()
    assert work.finish() == 0
    assert scalp.stop() == 0
    assert syscall_totals(out, work.pid)[(work.pid, "getppid")][0] == 888


def test_a_name_matching_nothing_lists_close_matches(out):
    work = Held("--comm", "scalpnearname")
    try:
        r = run_scalp("run", "--output", out, "--pid", "scalpnearnam")
    finally:
        work.kill()
    assert r.returncode == 6
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "no process matches \"scalpnearnam\"" in lines[0]
    assert "scalpnearname" in lines[0]
    assert not out.exists()


def test_several_targets_at_once(out):
    a = Held("--getppid", 100)
    b = Held("--comm", "scalpsecond", "--getppid", 200)
    scalp = Scalp(out, "--pid", a.pid, "--pid", "scalpsecond").wait_ready()
    a.go()
    b.go()
    a.finish()
    b.finish()
    assert scalp.stop() == 0
    totals = syscall_totals(out)
    assert totals[(a.pid, "getppid")][0] == 100
    assert totals[(b.pid, "getppid")][0] == 200


@pytest.mark.parametrize("spec", ["0", "-3", ""])
def test_bad_pid_values_are_usage_errors(out, spec):
    r = run_scalp("run", "--output", out, "--pid", spec)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(out)
