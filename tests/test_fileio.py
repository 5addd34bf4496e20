"""The file I/O tracer: calls and bytes by kind of descriptor and syscall family."""
from conftest import WORKLOADS, Held, Scalp, rows, run_scalp


def by_kind_op(out, pid):
    totals = {}
    for r in rows(out, "fileio", pid):
        c, b = totals.get((r["file_kind"], r["op"]), (0, 0))
        totals[(r["file_kind"], r["op"])] = (c + r["calls"], b + r["bytes"])
    return totals


def test_file_pipe_and_socket_are_told_apart_with_exact_bytes(out, tmp_path):
    work = Held("kinds", "--path", tmp_path / "kinds.dat", script=WORKLOADS / "fileio.py")
    scalp = Scalp(out, "--pid", work.pid).wait_ready()
    work.go()
    assert work.finish() == 0
    assert scalp.wait() == 0
    t = by_kind_op(out, work.pid)
    assert t[("file", "write")] == (3, 3000)
    assert t[("pipe", "write")] == (2, 4000)
    assert t[("socket", "write")] == (1, 3000)
    # The "go\n" that released the workload came through its stdin pipe: one read of 3 bytes.
    assert t[("pipe", "read")] == (2 + 1, 4000 + 3)
    assert t[("socket", "read")][1] == 3000
    # Python's startup reads files too; ours are 3 reads of 1000 bytes among them.
    assert t[("file", "read")][0] >= 3 and t[("file", "read")][1] >= 3000


def test_files_option_names_the_busiest_files(out, tmp_path):
    path = tmp_path / "busy.dat"
    work = Held("buffered", "--path", path, "--bytes", 5 << 20, "--hold-after", script=WORKLOADS / "fileio.py")
    scalp = Scalp(out, "--pid", work.pid, "--files", "5").wait_ready()
    work.go()
    assert work.readline().startswith("done")
    # Still open? No: closed; the name comes from the kernel then. Keep the process alive until
    # the interval is written, so the pid is still there.
    work.finish()
    assert scalp.wait() == 0
    files = rows(out, "files", work.pid)
    busy = [f for f in files if f["file_path"].endswith("busy.dat")]
    assert sum(f["write_bytes"] for f in busy) == 5 << 20
    assert sum(f["writes"] for f in busy) == 80
    assert all(len([f for f in files if f["interval_end"] == e]) <= 5 for e in {f["interval_end"] for f in files})


def test_tracers_can_be_turned_off(out):
    work = Held("--getppid", 10)
    scalp = Scalp(out, "--pid", work.pid, "--tracers", "syscalls").wait_ready()
    work.go()
    work.finish()
    assert scalp.wait() == 0
    assert not (out / "fileio").exists() and not (out / "blockio").exists()
    assert (out / "syscalls").exists()


def test_a_traced_command_is_counted_from_its_first_read(out, tmp_path):
    # The command's tables are set up before it starts: a short `cat` of a known file is seen
    # whole (one read of the file's size, one write of it to stdout, then the read at EOF).
    path = tmp_path / "seven.txt"
    path.write_bytes(b"x" * 7777)
    r = run_scalp("run", "--output", out, "--", "cat", path)
    assert r.returncode == 0, r.stderr
    pid = rows(out, "processes")[0]["process_pid"]
    t = by_kind_op(out, pid)
    file_reads = [x for x in rows(out, "fileio", pid) if x["file_kind"] == "file" and x["op"] == "read"]
    assert sum(x["bytes"] for x in file_reads) >= 7777
    assert t[("pipe", "write")] == (1, 7777)
