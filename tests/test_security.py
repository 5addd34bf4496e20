"""Security: who may run it, what it opens, what it writes."""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from conftest import PYTHON, SCALP, rows


def test_cap_bpf_and_cap_perfmon_are_enough():
    base = pathlib.Path(tempfile.mkdtemp(prefix="scalp-caps-"))
    os.chmod(base, 0o777)
    out = base / "run"
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "--inh-caps=-all,+bpf,+perfmon", "--ambient-caps=-all,+bpf,+perfmon",
                        SCALP, "run", "--output", out, "--", "sh", "-c", "grep ^CapEff /proc/self/status"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p["process_name"] for p in rows(out, "processes")) == ["grep", "sh"]
    calls = {x["syscall_name"]: x["calls"] for x in rows(out, "syscalls")}
    assert calls.get("execve", 0) >= 1
    # The traced command does not inherit the tracer's capabilities.
    assert r.stdout.split() == ["CapEff:", "0000000000000000"], r.stdout
    shutil.rmtree(base)


def socket_fds(pid):
    """The socket descriptors a process holds now (any family)."""
    found = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            found.append((int(fd), target))
    return found


# The traced command opens sockets of its own (TCP, UDP, a Unix pair): seen by the same probe,
# they show that it sees socket creation at all; scalp-bpf, its parent, must make none.
COMMAND_WITH_SOCKETS = r"""
import os, socket, time
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
a, b = socket.socketpair()
print("sockets", os.getpid(), flush=True)
time.sleep(1.5)
"""


def test_no_network_socket_during_a_whole_run(out):
    """From its first instruction to its exit, scalp-bpf creates no socket (socket(2),
    socketpair(2)) but one Unix socket pair (its async runtime's signal wake-up) and holds no other:
    every socket creation on the machine is watched by bpftrace, scalp-bpf's descriptors are
    sampled every few milliseconds."""
    # scalp-bpf's PID is known before it runs: a shell waits for a line, then execs it.
    launcher = subprocess.Popen(["sh", "-c", 'read _; exec "$@"', "sh", SCALP, "run", "--output", str(out),
                                 "--interval", "100ms", "--", PYTHON, "-c", COMMAND_WITH_SOCKETS],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scalp_pid = launcher.pid
    script = ('BEGIN { printf("ready\\n"); } '
              'tracepoint:syscalls:sys_enter_socket { printf("socket %d %d %d\\n", pid, tid, args->family); } '
              'tracepoint:syscalls:sys_enter_socketpair { printf("socketpair %d %d %d\\n", pid, tid, args->family); }')
    bt = subprocess.Popen(["bpftrace", "-B", "line", "-e", script], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    held = []
    try:
        lines = [bt.stdout.readline(), bt.stdout.readline()]
        assert lines[-1] == "ready\n", "".join(lines) + (bt.stderr.read() if bt.poll() is not None else "")
        launcher.stdin.write("go\n")
        launcher.stdin.close()
        launcher.stdin = None  # communicate() below must not flush it again
        while launcher.poll() is None:
            held += socket_fds(scalp_pid) if exe_is_scalp(scalp_pid) else []
            time.sleep(0.005)
        stdout, stderr = launcher.communicate()
        # Let bpftrace print what it saw up to now.
        time.sleep(0.5)
        bt.send_signal(signal.SIGINT)
        printed, err = bt.communicate(timeout=60)
    finally:
        launcher.kill()
        bt.kill()
    assert launcher.returncode == 0, stderr
    command_pid = int(next(l for l in stdout.splitlines() if l.startswith("sockets ")).split()[1])
    created = [line.split() for line in printed.splitlines() if line.startswith(("socket ", "socketpair "))]
    by_scalp = [c for c in created if int(c[1]) == scalp_pid]
    by_command = [c for c in created if int(c[1]) == command_pid]
    # The README's claim: no network socket. The one Unix socket pair is the async runtime's
    # signal wake-up (tokio's signal driver); every socket scalp-bpf held is one of that pair.
    assert by_scalp in ([], [["socketpair", str(scalp_pid), by_scalp[0][2] if by_scalp else "", str(socket.AF_UNIX)]]), by_scalp
    assert len({target for _, target in held}) <= 2, held
    # The probe works: it saw the command's three calls (AF_INET, AF_INET6, AF_UNIX pair).
    assert sorted((c[0], int(c[3])) for c in by_command) == [
        ("socket", socket.AF_INET), ("socket", socket.AF_INET6), ("socketpair", socket.AF_UNIX)], by_command
    assert {p["process_pid"] for p in rows(out, "processes")} == {command_pid}


def exe_is_scalp(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)") == os.path.realpath(SCALP)
    except OSError:
        return False


def test_the_traced_command_inherits_no_bpf_object_and_no_socket(out):
    """Nothing of scalp-bpf's crosses into the command it starts: no BPF map, program or link
    descriptor, no socket (its descriptors, listed by the command itself)."""
    listing = ("import os\n"
               "for fd in sorted(os.listdir('/proc/self/fd'), key=int):\n"
               "    try: print(fd, os.readlink('/proc/self/fd/' + fd))\n"
               "    except OSError: pass\n")
    r = subprocess.run([SCALP, "run", "--output", out, "--", PYTHON, "-c", listing],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    fds = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    # stdin, stdout, stderr, and the directory os.listdir has open.
    assert {"0", "1", "2"} <= set(fds), fds
    leaked = {fd: t for fd, t in fds.items() if "bpf" in t or t.startswith(("socket:", "anon_inode:"))}
    assert leaked == {}, fds
    assert len(fds) <= 4, fds
