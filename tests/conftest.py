"""Helpers for the acceptance tests: they run the real scalp-bpf binary as root, which loads the
real kernel programs, against workloads the tests drive themselves."""
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import time
import tomllib

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCALP = os.environ.get("SCALP_BPF", str(ROOT / "target/release/scalp-bpf"))
WORKLOADS = ROOT / "tests" / "workloads"
PYTHON = sys.executable
# CPythons other than the venv's 3.11, unpacked from Debian's archive by `cargo xtask test`
# (xtask/src/pythons.rs): version -> (binary, environment giving it the tests' drivers).
PYTHONS_DIR = ROOT / "target" / "pythons"
OTHER_PYTHONS = {v: (PYTHONS_DIR / v / "usr" / "bin" / f"python{v}", {"PYTHONPATH": str(PYTHONS_DIR / v / "site")})
                 for v in ("3.9", "3.13")}
SCHEMAS = ROOT / "schemas"


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("the acceptance tests load eBPF programs: run them as root", returncode=2)
    if not pathlib.Path(SCALP).exists():
        pytest.exit(f"{SCALP} not built (cargo xtask test builds it)", returncode=2)


def wait_for(predicate, timeout=30.0, what="condition", proc=None):
    """Polls `predicate` until true; fails after `timeout` or when `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Scalp:
    """A `scalp-bpf run` in the background."""

    def __init__(self, out, *args, verbose=False):
        self.out = pathlib.Path(out)
        cmd = [SCALP] + (["-v"] if verbose else []) + ["run", "--output", str(self.out), *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = ""

    def wait_ready(self, timeout=60):
        """Tracing is on once run.json exists (written after the targets are marked)."""
        try:
            wait_for(lambda: (self.out / "run.json").exists(), timeout, "scalp-bpf to start", self.proc)
        except AssertionError:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"scalp-bpf did not start: {err}")
        return self

    def stderr_line(self, needle, timeout=30):
        """Reads stderr until a line contains `needle` (scalp-bpf must run with verbose=True)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stderr.fileno()
        buffered = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                break
            self.stderr += chunk
            buffered += chunk
            *lines, buffered = buffered.split("\n")
            for line in lines:
                if needle in line:
                    return line
        raise AssertionError(f"scalp-bpf never logged {needle!r}; stderr so far:\n{self.stderr}")

    def stop(self, sig=signal.SIGINT, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout=60):
        _, err = self.proc.communicate(timeout=timeout)
        self.stderr += err
        return self.proc.returncode


def run_scalp(*args, timeout=120, user=None):
    """Runs scalp-bpf to completion; returns CompletedProcess (text)."""
    cmd = [SCALP, *map(str, args)]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


class Held:
    """A workload that prints 'ready PID' and waits for 'go' before working."""

    def __init__(self, *args, argv0=None, script=None, python=None, env=None):
        python = python or PYTHON
        script = script or str(WORKLOADS / "sysc.py")
        cmd = [python, str(script), "--hold", *map(str, args)]
        kwargs = {"env": {**os.environ, **env}} if env else {}
        if argv0:
            cmd[0] = argv0
            kwargs["executable"] = python
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kwargs)
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), line
        self.pid = int(line.split()[1])

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def readline(self):
        return self.proc.stdout.readline()

    def finish(self, timeout=60):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def read_table(out, table):
    return pq.read_table(pathlib.Path(out) / table)


def syscall_totals(out, pid=None):
    """{(pid, syscall_name): (calls, errors, timed_calls, duration_ns_sum)} over the whole run."""
    t = read_table(out, "syscalls").to_pylist()
    totals = {}
    for r in t:
        if pid is not None and r["process_pid"] != pid:
            continue
        key = (r["process_pid"], r["syscall_name"])
        c = totals.get(key, (0, 0, 0, 0))
        totals[key] = (c[0] + r["calls"], c[1] + r["errors"], c[2] + r["duration_timed_calls"],
                       c[3] + r["duration_ns_sum"])
    return totals


def run_json(out):
    return json.loads((pathlib.Path(out) / "run.json").read_text())


def schema_doc(table):
    return tomllib.loads((SCHEMAS / f"{table}.toml").read_text())


@pytest.fixture
def out(tmp_path):
    return tmp_path / "run"


@pytest.fixture(scope="session")
def mariadb():
    """A MariaDB server of the tests' own (tests/servers.py), with a scalp_items table."""
    from servers import MariaDB, pick_port
    server = MariaDB(port=pick_port(3306)).start()
    subprocess.run(["mariadb", f"--socket={server.socket}", "-u", "root", server.database, "-e",
                    "CREATE TABLE IF NOT EXISTS scalp_items (id INT PRIMARY KEY, v VARCHAR(64));"
                    "DELETE FROM scalp_items; INSERT INTO scalp_items VALUES (0, 'a'), (1, 'b'), (2, 'c')"],
                   check=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of the tests' own, pg_stat_statements loaded, a scalp_items table."""
    from servers import Postgres, pick_port
    server = Postgres(port=pick_port(5432)).start()
    server.psql("CREATE TABLE IF NOT EXISTS scalp_items (id INT PRIMARY KEY, v VARCHAR(64));"
                "DELETE FROM scalp_items; INSERT INTO scalp_items VALUES (0, 'a'), (1, 'b'), (2, 'c')")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq():
    """A RabbitMQ node of the tests' own (tests/servers.py), on a free port near 5672."""
    from servers import RabbitMQ, pick_port
    server = RabbitMQ(port=pick_port(5672)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def memcached():
    """memcached of the tests' own: TCP on a free port near 11211, and a Unix socket."""
    from servers import Memcached, pick_port
    server = Memcached(port=pick_port(11211)).start()
    yield server
    server.stop()


def rows(out, table, pid=None):
    """A table's rows as dicts (optionally of one process). A table that was not written is an
    error, not an empty list: a test must not pass on a table that is not there (use
    `absent_table` where a table is meant to be missing)."""
    path = pathlib.Path(out) / table
    if not path.is_dir():
        present = sorted(p.name for p in pathlib.Path(out).iterdir() if p.is_dir()) if pathlib.Path(out).is_dir() else []
        raise AssertionError(f"{out} has no table {table!r} (tables: {present})")
    return [r for r in read_table(out, table).to_pylist() if pid is None or r["process_pid"] == pid]


def absent_table(out, table):
    """True when `table` was not written (its tracer was not enabled); the run itself must exist."""
    assert (pathlib.Path(out) / "run.json").exists(), f"{out} is not a scalp-bpf run"
    return not (pathlib.Path(out) / table).exists()


KERNEL_NAMES = None


@pytest.fixture(autouse=True)
def nothing_left_in_the_kernel():
    """After every test, none of the BPF programs and maps of the scalp-bpf runs it started is
    still loaded or pinned, and none was ever held by another process (tests/kernel_objects.py).
    A scalp-bpf still running when the test ends (a failed test) is killed first."""
    import kernel_objects
    global KERNEL_NAMES
    if KERNEL_NAMES is None:
        KERNEL_NAMES = kernel_objects.kernel_names(ROOT / "tracer-ebpf" / "src")
    watch = kernel_objects.Watch(SCALP, KERNEL_NAMES)
    yield watch
    watch.stop()
    for pid in watch.still_running():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not watch.still_running(), 30, "the test's scalp-bpf processes to end")
    watch.check()
