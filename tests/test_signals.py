"""SIGINT/SIGTERM to scalp-bpf always end the run within a bounded time, with complete files,
even when the traced command ignores the signal (a background job of a non-interactive shell
starts with SIGINT ignored, and the command inherits that)."""
import os
import pathlib
import signal
import subprocess
import time

import pyarrow.parquet as pq

from conftest import PYTHON, SCALP, WORKLOADS, run_json, wait_for

# run/session.rs COMMAND_GRACE: how long the command gets after the signal is passed on.
GRACE = 10


def start_background_job(out, pidfile):
    """`scalp-bpf run -- stubborn.py &` from `sh -c`: scalp-bpf and the command start with SIGINT
    ignored. Returns the shell (which waits for scalp-bpf) and scalp-bpf's PID. scalp-bpf's
    output goes to files: the command, which may outlive it, inherits its descriptors."""
    script = '"$0" run --output "$1" --interval 100ms -- "$2" "$3" "$4" >"$5" 2>"$6" & echo $! >"$7"; wait $!'
    logs = out.parent
    shell = subprocess.Popen(["sh", "-c", script, SCALP, str(out), PYTHON, str(WORKLOADS / "stubborn.py"),
                              str(pidfile), str(logs / "stdout"), str(logs / "stderr"), str(logs / "scalp.pid")])
    wait_for(lambda: (logs / "scalp.pid").exists() and (logs / "scalp.pid").read_text().strip(), 10,
             "the shell to start scalp-bpf", shell)
    scalp_pid = int((logs / "scalp.pid").read_text())
    wait_for(lambda: pidfile.exists() and pidfile.read_text() and (out / "run.json").exists(), 60,
             "the command to start under scalp-bpf", shell)
    return shell, scalp_pid


def command_state(pid):
    """The command's state letter, or None when it is gone."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return None


def sigint_ignored(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(l for l in status.splitlines() if l.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def finish(shell, cmd_pid):
    """Waits for the run to end; returns scalp-bpf's exit code and stderr. The command must have
    been left running (it ignores SIGINT): it is killed here."""
    try:
        shell.wait(timeout=GRACE + 30)
        assert command_state(cmd_pid) not in (None, "Z"), "the command should be left running"
    finally:
        if command_state(cmd_pid):
            os.kill(cmd_pid, signal.SIGKILL)
    return shell.returncode, (pathlib.Path(shell.args[-1]).parent / "stderr").read_text()


def check_files(out, cmd_pid):
    meta = run_json(out)
    assert meta["run_end"], meta
    assert not list(out.rglob("*.inprogress"))
    rows = pq.read_table(out / "syscalls").to_pylist()
    assert sum(r["calls"] for r in rows if r["process_pid"] == cmd_pid and r["syscall_name"] == "getppid") > 0
    return meta


def test_sigint_ends_the_run_after_the_grace_period_when_the_command_ignores_it(tmp_path):
    out, pidfile = tmp_path / "run", tmp_path / "pid"
    shell, scalp_pid = start_background_job(out, pidfile)
    cmd_pid = int(pidfile.read_text())
    assert sigint_ignored(cmd_pid), "the command should have inherited SIGINT ignored"
    time.sleep(0.5)
    sent = time.monotonic()
    os.kill(scalp_pid, signal.SIGINT)
    code, err = finish(shell, cmd_pid)
    waited = time.monotonic() - sent
    # The shell reports scalp-bpf's exit code: 128 + SIGINT, as a shell would for the command.
    assert code == 128 + signal.SIGINT, err
    assert GRACE - 1 <= waited < GRACE + 20, waited
    assert (f"the command (PID {cmd_pid}) had not exited on the SIGINT passed on to it (it may ignore "
            "the signal); tracing stopped, the command goes on untraced") in err, err
    meta = check_files(out, cmd_pid)
    assert meta["end_reason"] == "signal SIGINT"


def test_a_second_signal_ends_the_run_at_once(tmp_path):
    out, pidfile = tmp_path / "run", tmp_path / "pid"
    shell, scalp_pid = start_background_job(out, pidfile)
    cmd_pid = int(pidfile.read_text())
    time.sleep(0.5)
    sent = time.monotonic()
    os.kill(scalp_pid, signal.SIGINT)
    time.sleep(0.5)
    os.kill(scalp_pid, signal.SIGTERM)
    code, err = finish(shell, cmd_pid)
    assert code == 128 + signal.SIGTERM, err
    assert time.monotonic() - sent < GRACE - 2, "the second signal did not stop the run at once"
    assert "had not exited on the SIGINT passed on to it" in err, err
    meta = check_files(out, cmd_pid)
    assert meta["end_reason"] == "signal SIGTERM"


def test_a_command_that_obeys_the_passed_on_signal_gives_its_exit_code(tmp_path):
    out, pidfile = tmp_path / "run", tmp_path / "pid"
    scalp = subprocess.Popen([SCALP, "run", "--output", str(out), "--interval", "100ms", "--", PYTHON,
                              str(WORKLOADS / "stubborn.py"), str(pidfile)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: pidfile.exists() and pidfile.read_text() and (out / "run.json").exists(), 60,
             "the command to start under scalp-bpf", scalp)
    cmd_pid = int(pidfile.read_text())
    assert not sigint_ignored(cmd_pid)
    time.sleep(0.5)
    scalp.send_signal(signal.SIGINT)
    _, err = scalp.communicate(timeout=GRACE)
    # An uncaught KeyboardInterrupt makes CPython die by SIGINT: 128 + 2 in the shell's terms.
    assert scalp.returncode == 128 + signal.SIGINT, err
    assert "still running" not in err
    meta = check_files(out, cmd_pid)
    assert meta["end_reason"] == "command exited"
    assert meta["command_exit_code"] == 128 + signal.SIGINT
