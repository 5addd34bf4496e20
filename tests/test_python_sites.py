"""Python call sites of SQL statements: the kernel walks the sending thread's CPython frames at
each SQL send, user space names them, and sql_statements carries the first frame outside the
database stack (code_function_name, code_file_path, code_line_number). The workload sends the
same statement from two functions, in threads, eventlet green threads and through SQLAlchemy;
every statement must carry the line that issued it. Under the venv's CPython 3.11 and under
Debian's 3.9 and 3.13 (unpacked under target/pythons by `cargo xtask test`)."""
import collections
import glob
import json
import os
import pathlib
import subprocess
import tomllib

import pytest

from conftest import OTHER_PYTHONS, PYTHON, ROOT, WORKLOADS, Held, Scalp, rows

APP = WORKLOADS / "sql_sites.py"
OFFSETS = ROOT / "tracer-user/src/python/offsets.json"


def line_of(marker):
    """The line of the app that ends with `# site NAME` (or `# call NAME` when given so)."""
    tag = marker if marker.startswith("call ") else f"site {marker}"
    for n, line in enumerate(APP.read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# {tag}"):
            return n
    raise AssertionError(marker)


def traced(out, server, app_args, scalp_args=(), python=None, env=None):
    """Runs the app's work under `scalp-bpf run --pid`; returns the app (ended)."""
    work = Held("--port", server.port, *app_args, script=APP, python=python, env=env)
    try:
        scalp = Scalp(out, "--pid", work.pid, "--sql-port", server.port, "--tracers", "syscalls,sql",
                      "--interval", "200ms", "--sql-code", *scalp_args).wait_ready()
        work.go()
        assert work.readline() == "done\n"
        scalp.stop()
        assert scalp.wait() == 0, scalp.stderr
    finally:
        work.kill()
    return work


def sites(out, pid):
    """{(function, file, line): calls} of the app's statements on scalp_items."""
    got = collections.Counter()
    for r in rows(out, "sql_statements", pid):
        if "scalp_items" in r["db_query_text"]:
            got[(r["code_function_name"], r["code_file_path"], r["code_line_number"])] += r["calls"]
    return got


# The venv's 3.11 runs every mode; Debian's 3.9 and 3.13 plain threads and eventlet (their
# trees hold PyMySQL, psycopg and eventlet, not SQLAlchemy).
CASES = [("3.11", mode) for mode in ("threads", "eventlet", "sqlalchemy")] + \
    [(version, mode) for version in OTHER_PYTHONS for mode in ("threads", "eventlet")]


@pytest.mark.parametrize("python,mode", CASES, ids=[f"{v}-{m}" for v, m in CASES])
@pytest.mark.parametrize("kind", ["mysql", "postgres"])
def test_every_statement_carries_the_line_that_sent_it(out, python, mode, kind, request):
    server = request.getfixturevalue("mariadb" if kind == "mysql" else "postgres")
    binary, env = OTHER_PYTHONS.get(python, (None, None))
    if binary is not None:
        assert binary.exists(), f"{binary} is not there: `cargo xtask test` installs it"
    workers, n = 3, 40
    work = traced(out, server, ["--kind", kind, "--mode", mode, "--workers", workers, "--n", n],
                  python=binary, env=env)
    prefix = "orm_" if mode == "sqlalchemy" else ""
    want = {(f"{prefix}{f}", str(APP), line_of(f"{prefix}{f}")): workers * n
            for f in ("load_item", "count_item")}
    assert sites(out, work.pid) == want

    # sql_stacks: the same statements, their whole stacks. Each call site's stack goes on to
    # the function that called it (worker / orm_worker, at its call's line) and ends at the
    # thread's or green thread's start; inside, the driver's frames.
    stacks = [r for r in rows(out, "sql_stacks", work.pid) if "scalp_items" in r["db_query_text"]]
    per_site = collections.Counter()
    caller = f"{prefix}worker"
    for r in stacks:
        site = (r["code_function_name"], r["code_file_path"], r["code_line_number"])
        per_site[site] += r["calls"]
        names, files, lines = r["stack_function_names"], r["stack_file_paths"], r["stack_line_numbers"]
        i = names.index(site[0])
        assert (files[i], lines[i]) == site[1:], r
        assert names[i + 1] == caller and files[i + 1] == str(APP), names
        assert lines[i + 1] == line_of(f"call {site[0]}"), (names, lines)
        driver = "/sqlalchemy/" if mode == "sqlalchemy" else ("/pymysql/" if kind == "mysql" else "/psycopg/")
        assert any(driver in f for f in files[:i]), files[:i]
        outer = "/eventlet/green/thread.py" if mode == "eventlet" else "/threading.py"
        assert any(outer in f for f in files[i + 1:]), files
        assert not r["stack_truncated"]
    assert per_site == want
    drops = {(d["tracer"], d["reason"]): d["count"] for d in json.loads((out / "run.json").read_text())["drops"]}
    assert not any(k[0] == "sql" and k[1].startswith("python") for k in drops), drops
    assert ("sockets", "python_thread_not_found") not in drops, drops


def include_dirs():
    """The include directories of each CPython here: {directory: version}."""
    dirs = {}
    pythons = [(PYTHON, None), ("/usr/bin/python3.11", None)] + [(str(b), e) for b, e in OTHER_PYTHONS.values()]
    for python, env in pythons:
        if not os.path.exists(python):
            continue
        r = subprocess.run([python, "-c", "import sysconfig, sys; print(sysconfig.get_paths()['include']);"
                            "print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True,
                           env={**os.environ, **(env or {})}, check=True)
        inc, version = r.stdout.split()
        if pathlib.Path(inc, "internal").is_dir():
            dirs[inc] = version
    return dirs


def offsets_of(cmd):
    return {k: int(v) for k, v in (line.split() for line in subprocess.run(
        cmd, capture_output=True, text=True, check=True).stdout.splitlines())}


def test_the_offsets_table_is_what_each_cpythons_headers_say(tmp_path):
    table = json.loads(OFFSETS.read_text())
    dirs = include_dirs()
    assert set(dirs.values()) >= {"3.9", "3.11", "3.13"}, dirs
    for inc, version in dirs.items():
        exe = tmp_path / "offsets"
        # Debian's pyconfig.h includes the multiarch one, from the include directory's parent.
        subprocess.run(["cc", f"-I{inc}", f"-I{pathlib.Path(inc).parent}", "-o", exe,
                        ROOT / "tests/python/offsets.c"], check=True)
        assert table[version] == offsets_of([exe]), inc


def py_spy_bindings():
    """py-spy's bindgen output of each version's headers, from the crate cargo fetched."""
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == "py-spy"]
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    (crate,) = glob.glob(f"{home}/registry/src/*/py-spy-{version}")
    return {pathlib.Path(f).stem: f for f in glob.glob(f"{crate}/src/python_bindings/v3_*.rs")}


def test_the_offsets_table_is_what_py_spys_bindings_of_each_version_say(tmp_path):
    # The only source here for 3.10 and 3.12 (no Debian suite carries them); a second one for
    # the versions whose headers the test above reads.
    table = json.loads(OFFSETS.read_text())
    bindings = py_spy_bindings()
    for version in table:
        minor = version.split(".")[1]
        (path,) = [p for stem, p in bindings.items() if stem.startswith(f"v3_{minor}_")]
        main = tmp_path / f"offsets_{minor}.rs"
        main.write_text(f'#[allow(warnings, clippy::all)]\n#[path = "{path}"]\nmod b;\n'
                        f'include!("{ROOT}/tests/python/offsets_bindings.rs");\n')
        exe = tmp_path / f"offsets_{minor}"
        subprocess.run(["rustc", "--edition", "2021", "-A", "warnings", "--cfg", f"py3{minor}",
                        "-o", exe, main], check=True)
        assert table[version] == offsets_of([exe]), path


def test_an_interpreter_the_table_does_not_know_leaves_the_columns_null_and_says_why(out, mariadb):
    # The offsets table reduced to a version this CPython is not (test-only flag): the process
    # is seen as a CPython whose layout is unknown, as a 3.14 would be.
    work = traced(out, mariadb, ["--kind", "mysql", "--workers", 1, "--n", 20], ["--sql-code-versions", "3.99"])
    statements = rows(out, "sql_statements", work.pid)
    assert sum(r["calls"] for r in statements if "scalp_items" in r["db_query_text"]) == 40
    assert all(r["code_function_name"] is None and r["code_file_path"] is None
               and r["code_line_number"] is None for r in statements)
    drops = {(d["tracer"], d["reason"]): d["count"] for d in json.loads((out / "run.json").read_text())["drops"]}
    assert drops.get(("sql", "python_unsupported")) == sum(r["calls"] for r in statements), drops
    assert not (out / "sql_stacks").exists() or rows(out, "sql_stacks", work.pid) == []
