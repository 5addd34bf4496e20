"""Bad input: every row of the README's bad-input table, run as written. Each must print exactly
the documented line on stderr (one line, no panic, no backtrace), exit with the documented code,
and — for `run` — leave nothing half-written (the output directory is not created).

The table's commands use placeholders that this module sets up: $OUT (a path that does not exist
yet), $DIR (an empty directory), $NONEMPTY, $FILE (a file of junk), $SCRIPT (not executable), $RO
(a read-only mount), $GONE_PID, $ZOMBIE_PID, and runs: $RUN (a good one), $RUN_SYSCALLS (only
the syscalls table), $RUN_TRUNCATED (a Parquet part cut in half), $RUN_V99 (another schema
version), $RUN_GARBLED (run.json not JSON), $RUN_BADLOG (a foreign file as its write-ahead log),
$RUN_KILLED (killed with SIGKILL while tracing). A command starting with `as nobody:` runs without
root and capabilities."""
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, SCALP, run_scalp

README = ROOT / "README.md"
BEGIN, END = "<!-- bad-input-table:begin -->", "<!-- bad-input-table:end -->"


def table_rows():
    text = README.read_text()
    body = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) != 4 or not cells[0].isdigit():
            continue
        n, command, message, code = cells
        unquote = lambda c: c.strip("`").replace("\\|", "|")
        rows.append((int(n), unquote(command), unquote(message), int(code)))
    return rows


ROWS = table_rows()


def test_the_readme_lists_at_least_25_bad_inputs_numbered_in_order():
    assert len(ROWS) >= 25
    assert [r[0] for r in ROWS] == list(range(1, len(ROWS) + 1))


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    p = {}
    d = base / "empty"
    d.mkdir()
    p["DIR"] = d
    (base / "nonempty").mkdir()
    (base / "nonempty" / "keep").write_text("keep me")
    p["NONEMPTY"] = base / "nonempty"
    (base / "junk").write_bytes(b"not btf at all")
    p["FILE"] = base / "junk"
    (base / "script").write_text("#!/bin/sh\n")
    p["SCRIPT"] = base / "script"
    ro = base / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro], check=True)
    p["RO"] = ro
    gone = subprocess.Popen(["true"])
    gone.wait()
    p["GONE_PID"] = gone.pid
    zombie = subprocess.Popen(["true"])
    while open(f"/proc/{zombie.pid}/stat").read().split(") ")[1][0] != "Z":
        time.sleep(0.01)
    p["ZOMBIE_PID"] = zombie.pid

    def run(name, *args):
        out = base / name
        r = run_scalp("run", "--output", out, *args, "--", "sh", "-c", "echo hi > /dev/null")
        assert r.returncode == 0, r.stderr
        return out

    p["RUN"] = run("run")
    p["RUN_SYSCALLS"] = run("run-syscalls", "--tracers", "syscalls")
    p["RUN_TRUNCATED"] = shutil.copytree(p["RUN"], base / "run-truncated")
    part = sorted((p["RUN_TRUNCATED"] / "syscalls").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    p["TRUNCATED_PART"] = part
    p["RUN_V99"] = shutil.copytree(p["RUN"], base / "run-v99")
    meta = json.loads((p["RUN_V99"] / "run.json").read_text())
    meta["schema_version"] = 99
    (p["RUN_V99"] / "run.json").write_text(json.dumps(meta))
    p["RUN_GARBLED"] = shutil.copytree(p["RUN"], base / "run-garbled")
    (p["RUN_GARBLED"] / "run.json").write_text("{ not json")
    p["RUN_BADLOG"] = shutil.copytree(p["RUN"], base / "run-badlog")
    (p["RUN_BADLOG"] / ".wal").mkdir(mode=0o700)
    (p["RUN_BADLOG"] / ".wal" / "00000001.wal").write_bytes(b"PAR1 not a write-ahead log")
    p["RUN_KILLED"] = killed_run(base / "run-killed")
    yield p
    subprocess.run(["umount", ro], check=True)
    zombie.wait()


def killed_run(out):
    """A run killed with SIGKILL while tracing: its intervals are in its write-ahead log."""
    scalp = subprocess.Popen([SCALP, "run", "--output", out, "--interval", "50ms", "--", "sleep", "30"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / "run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    children = open(f"/proc/{scalp.pid}/task/{scalp.pid}/children").read().split()
    scalp.kill()
    scalp.wait()
    for pid in children:
        os.kill(int(pid), 9)
    assert list((out / ".wal").glob("*.wal")), "no log left"
    return out


def expand(text, places):
    # Longest names first: $RUN_SYSCALLS before $RUN.
    for k in sorted(places, key=len, reverse=True):
        text = text.replace(f"${k}", str(places[k]))
    return text


@pytest.mark.parametrize("n,command,message,code", ROWS, ids=[f"row{r[0]}" for r in ROWS])
def test_bad_input_row(places, tmp_path, n, command, message, code):
    places = dict(places, OUT=tmp_path / "out")
    nobody = command.startswith("as nobody: ")
    argv = shlex.split(expand(command.removeprefix("as nobody: "), places))
    assert argv[0] == "scalp-bpf", command
    argv[0] = SCALP
    if nobody:
        os.chmod(tmp_path, 0o777)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.stderr == expand(message, places) + "\n", f"row {n}: {r.stderr!r}"
    assert r.returncode == code, f"row {n}: exit {r.returncode}"
    assert r.stdout == ""
    if argv.count("run") and "$OUT" in command:
        assert not (tmp_path / "out").exists(), "output written on failure"
    assert (places["NONEMPTY"] / "keep").read_text() == "keep me"


def test_help_and_version_succeed():
    assert subprocess.run([SCALP, "--help"], capture_output=True).returncode == 0
    r = subprocess.run([SCALP, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("scalp-bpf ")
