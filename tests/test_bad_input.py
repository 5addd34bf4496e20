"""Bad input: one clear line on stderr, a distinct documented exit code, no panic, nothing
half-written (the output directory is not created)."""
import os
import subprocess
import tempfile

import pytest

from conftest import PYTHON, SCALP, run_scalp


def check(r, code, *needles, out=None):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("scalp-bpf: "), lines[0]
    assert "panicked" not in r.stderr and "backtrace" not in r.stderr.lower()
    for n in needles:
        assert n in lines[0], lines[0]
    if out is not None:
        assert not os.path.exists(out), "output written on failure"


def test_not_root(tmp_path):
    out = tempfile.mkdtemp(prefix="scalp-nobody-")
    os.chmod(out, 0o777)
    target = os.path.join(out, "run")
    r = run_scalp("run", "--output", target, "--", "true", user="65534")
    check(r, 3, "root", "CAP_BPF", "CAP_PERFMON", out=target)


def test_no_btf(out):
    check(run_scalp("run", "--output", out, "--kernel-btf", "/nonexistent/vmlinux", "--", "true"),
          4, "BTF", "/nonexistent/vmlinux", out=out)


def test_btf_file_that_is_not_btf(out, tmp_path):
    junk = tmp_path / "vmlinux"
    junk.write_bytes(b"not btf at all")
    check(run_scalp("run", "--output", out, "--kernel-btf", junk, "--", "true"), 4, "BTF", out=out)


def test_non_empty_output_dir(tmp_path):
    (tmp_path / "x").write_text("keep me")
    check(run_scalp("run", "--output", tmp_path, "--", "true"), 5, "not empty")
    assert (tmp_path / "x").read_text() == "keep me"


def test_output_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    check(run_scalp("run", "--output", f, "--", "true"), 5, "not a directory")


def test_unwritable_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro], check=True)
    try:
        check(run_scalp("run", "--output", ro / "run", "--", "true"), 5, "not writable", out=ro / "run")
    finally:
        subprocess.run(["umount", ro], check=True)


@pytest.mark.parametrize("flag,value", [
    ("--duration", "fast"), ("--duration", "0s"), ("--duration", "-5s"),
    ("--interval", "1ms"), ("--interval", "soon"), ("--flush-every", "0"),
    ("--syscall-latency", "sometimes"), ("--latency-sample", "3"),
])
def test_bad_values(out, flag, value):
    check(run_scalp("run", "--output", out, flag, value, "--", "true"), 2, flag, out=out)


def test_unknown_flag(out):
    check(run_scalp("run", "--output", out, "--frobnicate", "--", "true"), 2, "--frobnicate", out=out)


def test_nothing_to_trace(out):
    check(run_scalp("run", "--output", out), 2, "nothing to trace", out=out)


def test_a_pid_that_does_not_exist(out):
    p = subprocess.Popen(["true"])
    p.wait()
    check(run_scalp("run", "--output", out, "--pid", p.pid), 6, f"PID {p.pid}", out=out)


def test_a_pid_that_exited_but_was_not_reaped(out):
    p = subprocess.Popen(["true"])
    # Not waited for: a zombie, which makes no syscalls any more.
    import time
    while open(f"/proc/{p.pid}/stat").read().split(") ")[1][0] != "Z":
        time.sleep(0.01)
    try:
        check(run_scalp("run", "--output", out, "--pid", p.pid), 6, f"PID {p.pid}", "exited", out=out)
    finally:
        p.wait()


def test_a_command_that_does_not_exist(out):
    check(run_scalp("run", "--output", out, "--", "scalp-no-such-command"), 127,
          "command not found", out=out)


def test_a_command_that_is_not_executable(out, tmp_path):
    f = tmp_path / "script"
    f.write_text("#!/bin/sh\n")
    check(run_scalp("run", "--output", out, "--", f), 126, "not executable", out=out)


def test_help_and_version_succeed():
    assert subprocess.run([SCALP, "--help"], capture_output=True).returncode == 0
    r = subprocess.run([SCALP, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("scalp-bpf ")
