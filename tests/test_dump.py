"""`scalp-bpf dump`: a Guru Meditation report of a running Python service, taken from outside.
The app (workloads/dump_app.py) says which thread waits in which function, what it holds open
and which packages its own importlib.metadata sees; the dump must say the same."""
import json
import os
import pathlib
import subprocess

import pytest

import servers
from conftest import OTHER_PYTHONS, PYTHON, WORKLOADS, run_scalp, wait_for

APP = WORKLOADS / "dump_app.py"
SECRETS = ["hunter2", "rabbitpw", "dbpass", "cachekey"]
CONFIG = """[DEFAULT]
debug = True
transport_url = rabbit://openstack:rabbitpw@127.0.0.1:5672/
[database]
connection = mysql+pymysql://nova:dbpass@127.0.0.1/nova
[keystone_authtoken]
password = hunter2
memcache_secret_key = cachekey
auth_url = http://127.0.0.1:5000/v3
"""

# The test venv's interpreter (pyenv's CPython), and Debian's own python3.11 where it exists:
# two builds, two package layouts (venv site-packages, Debian dist-packages); then Debian's 3.9
# and 3.13 (other suites, unpacked under target/pythons, their packages on PYTHONPATH).
INTERPRETERS = [pytest.param((PYTHON, None), id="venv")]
if pathlib.Path("/usr/bin/python3.11").exists():
    INTERPRETERS.append(pytest.param(("/usr/bin/python3.11", None), id="debian"))
INTERPRETERS += [pytest.param((str(binary), env), id=f"debian-{v}") for v, (binary, env) in OTHER_PYTHONS.items()]


class App:
    def __init__(self, python, tmp_path):
        python, env = python
        self.version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                      capture_output=True, text=True, check=True).stdout.strip()
        config = tmp_path / "app.conf"
        config.write_text(CONFIG)
        self.config = config
        self.proc = subprocess.Popen(
            [python, str(APP), "--config-file", str(config), "--held-file", str(tmp_path / "held.txt")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.facts = json.loads(self.proc.stdout.readline())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


@pytest.fixture
def app(request, tmp_path):
    a = App(request.param, tmp_path)
    yield a
    a.stop()


def line_of(marker):
    """The line of APP that carries `# <marker>`."""
    for n, line in enumerate(APP.read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# {marker}"):
            return n
    raise AssertionError(marker)


def frame_in(stack, function):
    return next((f for f in stack if f["function"] == function), None)


@pytest.mark.parametrize("app", INTERPRETERS, indirect=True)
def test_dump_names_every_thread_file_socket_config_and_package(app):
    r = run_scalp("dump", "--pid", app.facts["pid"], "--format", "json")
    assert r.returncode == 0, r.stderr
    dump = json.loads(r.stdout)
    procs = {p["pid"]: p for p in dump["processes"]}
    assert set(procs) == {app.facts["pid"], app.facts["child"]}
    p = procs[app.facts["pid"]]
    assert p["reason"] == f"--pid {app.facts['pid']}"
    assert p["python"]["version"].startswith(f"{app.version}."), p["python"]
    assert p["python"]["paused_us"] > 0

    # Every thread the kernel has, each Python one with its stack, parked where the app says.
    tids = {int(t) for t in os.listdir(f"/proc/{app.facts['pid']}/task")}
    threads = {t["tid"]: t for t in p["threads"]}
    assert set(threads) == tids
    expected_line = {
        "parked_in_known_function": line_of("parked here"),
        "reading_from_a_socket": line_of("blocked here"),
        "main_waits_for_stdin": line_of("main parked here"),
    }
    for tid, function in app.facts["threads"].items():
        t = threads[int(tid)]
        assert t["state"] == "S", t
        frame = frame_in(t["python_stack"], function)
        assert frame, (function, t["python_stack"])
        assert frame["file"] == str(APP) and frame["line"] == expected_line[function], frame
    assert threads[int(next(iter(app.facts["threads"])))]["python_name"] == "parker"
    if os.access(f"/proc/{app.facts['pid']}/task/{app.facts['pid']}/stack", os.R_OK):
        assert all(t["kernel_stack"] for t in threads.values()), "a kernel stack is missing"

    # The child is there as a descendant, parked in its own function.
    c = procs[app.facts["child"]]
    assert c["reason"] == "descendant"
    (main,) = [t for t in c["threads"] if t["tid"] == app.facts["child"]]
    frame = frame_in(main["python_stack"], "child_waits_forever")
    assert frame and frame["line"] == line_of("child parked here"), main

    # Files and sockets, with the peer.
    files = p["files"]
    assert any(f["kind"] == "file" and f["target"] == app.facts["held_file"] for f in files)
    tcp = [f["socket"] for f in files if f["socket"] and f["socket"]["protocol"] == "tcp"]
    assert {"local": app.facts["client"], "remote": app.facts["server"]}.items() <= \
        next(s for s in tcp if s["local"] == app.facts["client"]).items()
    assert any(s["local"] == app.facts["server"] and s["remote"] is None and s["state"] == "Listen"
               for s in tcp), tcp

    # The config file, secrets masked, everything else as written.
    (conf,) = p["config_files"]
    assert conf["path"] == str(app.config)
    for secret in SECRETS:
        assert secret not in r.stdout, secret
    assert "transport_url = rabbit://openstack:***@127.0.0.1:5672/" in conf["text"]
    assert "connection = mysql+pymysql://nova:***@127.0.0.1/nova" in conf["text"]
    assert "password = ***" in conf["text"] and "memcache_secret_key = ***" in conf["text"]
    assert "auth_url = http://127.0.0.1:5000/v3" in conf["text"]

    # The packages: exactly what the app's own importlib.metadata sees, first of a name wins.
    packages = {normalize(pkg["name"]): pkg["version"] for pkg in p["packages"]}
    assert packages == app.facts["packages"]
    assert packages, "no packages at all"

    # The text form says the same things.
    t = run_scalp("dump", "--pid", app.facts["pid"])
    assert t.returncode == 0, t.stderr
    for function in expected_line:
        assert f"{function} ({APP}:{expected_line[function]})" in t.stdout
    for secret in SECRETS:
        assert secret not in t.stdout, secret
    assert f"-> {app.facts['server']}" in t.stdout


def normalize(name):
    import re
    return re.sub(r"[-_.]+", "-", name).lower()


def test_a_uwsgi_worker_in_a_request_shows_its_python_stack(tmp_path):
    # uWSGI starts Python in its master and forks the worker from C: the worker's thread state
    # keeps the master's thread id. The dump must still give the worker's thread its stack.
    app = WORKLOADS / "parked_wsgi.py"
    release = tmp_path / "release"
    port = servers.pick_port(8170)
    cmd = [servers.UWSGI, "--http-socket", f"127.0.0.1:{port}", "--master", "--processes", "1",
           "--wsgi-file", str(app), "--logto", str(tmp_path / "uwsgi.log")]
    if servers.sys.prefix != servers.sys.base_prefix:
        cmd += ["--virtualenv", servers.sys.prefix]
    master = subprocess.Popen(cmd, env={**os.environ, "SCALP_PARKED_RELEASE": str(release)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        wait_for(lambda: (tmp_path / "uwsgi.log").exists() and "spawned uWSGI worker 1"
                 in (tmp_path / "uwsgi.log").read_text(), 30, "the uWSGI worker", master)
        fetch = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=60).read().decode())"
        client = subprocess.Popen([PYTHON, "-c", fetch, f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        worker = int(open(f"/proc/{master.pid}/task/{master.pid}/children").read().split()[0])
        [line] = [n for n, t in enumerate(app.read_text().splitlines(), 1) if t.endswith("# parked here")]

        def parked():
            r = run_scalp("dump", "--pid", worker, "--format", "json")
            assert r.returncode == 0, r.stderr
            [thread] = json.loads(r.stdout)["processes"][0]["threads"]
            stack = thread["python_stack"] or []
            return [(f["function"], f["line"]) for f in stack[:2]] == [
                ("parked_in_request", line), ("application", line + 4)]
        wait_for(parked, 30, "the worker's dump to show it parked in the request")
        release.touch()
        assert client.communicate(timeout=30)[0] == "released\n"
    finally:
        if client and client.poll() is None:
            client.kill()
        master.kill()
        master.wait()
        subprocess.run(["pkill", "-9", "-f", f"127.0.0.1:{port}"])


def test_a_process_that_is_not_python_is_reported_without_stacks(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        r = run_scalp("dump", "--pid", sleeper.pid, "--format", "json")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 0, r.stderr
    (p,) = json.loads(r.stdout)["processes"]
    assert p["python"] == {"version": None, "paused_us": None, "unavailable": "not a Python process"}
    assert [t["tid"] for t in p["threads"]] == [sleeper.pid] and p["threads"][0]["python_stack"] is None
    assert p["packages"] == [] and p["memory"]["rss_bytes"] > 0


def test_a_missing_target_is_one_line_and_exit_6():
    r = run_scalp("dump", "--pid", "no-such-service-xyz")
    assert r.returncode == 6
    assert r.stderr.strip().startswith("scalp-bpf: no process matches") and len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""
