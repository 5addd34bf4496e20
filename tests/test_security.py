"""Security: who may run it, what it opens, what it writes."""
import os
import pathlib
import shutil
import subprocess
import tempfile

from conftest import SCALP, Held, Scalp, rows


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


def listening_inodes():
    """Socket inodes in a listening state: TCP/TCP6 LISTEN, any bound UDP, Unix listeners."""
    found = set()
    for name in ["tcp", "tcp6"]:
        for line in open(f"/proc/net/{name}").read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A":
                found.add(f[9])
    for name in ["udp", "udp6"]:
        for line in open(f"/proc/net/{name}").read().splitlines()[1:]:
            found.add(line.split()[9])
    for line in open("/proc/net/unix").read().splitlines()[1:]:
        f = line.split()
        if f[3] == "00010000":  # __SO_ACCEPTCON: listening
            found.add(f[6])
    return found


def socket_inodes(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def test_no_network_listener(out):
    work = Held("--getppid", 10)
    scalp = Scalp(out, "--pid", work.pid).wait_ready()
    try:
        mine = socket_inodes(scalp.proc.pid)
        assert not (mine & listening_inodes()), mine
    finally:
        work.go()
        work.finish()
        assert scalp.wait() == 0
