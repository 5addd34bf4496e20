"""Checks of the kernel matrix (`cargo xtask test --kernel …`, xtask/src/vm/): each guest ran
the release scalp-bpf on a workload whose calls and I/O are known in advance (xtask vm-workload)
and sent back its output tables, exit codes, stderr and disk counters; these checks compare them.

Not collected by the host suite (the file name does not match test_*.py): xtask runs it by path,
with SCALP_VM_RESULTS (target/vm) and SCALP_VM_KERNELS (the kernels of this run)."""
import json
import os
import pathlib
import re

import pyarrow.parquet as pq
import pytest

RESULTS = pathlib.Path(os.environ.get("SCALP_VM_RESULTS", "target/vm"))
KERNELS = [k for k in os.environ.get("SCALP_VM_KERNELS", "").split(",") if k]
BLOCK = 4096
# What a run's stderr may not contain: log lines at WARN/ERROR, scalp-bpf's own lines
# ("scalp-bpf: …": errors, drop notices) other than the closing "wrote", a panic.
BAD_STDERR = (" WARN ", " ERROR ", "scalp-bpf:", "panicked")
CLOSING = "scalp-bpf: wrote "
# Tracers a kernel of the matrix does not fully support, by design, with their status: anything
# else not "ok" fails (README: support matrix).
NOT_OK = {}


def pytest_generate_tests(metafunc):
    if not KERNELS:
        raise pytest.UsageError("SCALP_VM_KERNELS is empty: run these checks with cargo xtask test --kernel")
    if "check" in metafunc.fixturenames:
        # A kernel that was not prepared has no plan: one failing "noplan" check, not a skip.
        pairs = [(k, c) for k in KERNELS for c in (plan(k).get("checks") or ["noplan"])]
        metafunc.parametrize(("kernel", "check"), pairs, ids=[f"{k}-{c}" for k, c in pairs])
    elif "kernel" in metafunc.fixturenames:
        metafunc.parametrize("kernel", KERNELS)


def plan(kernel):
    try:
        return json.loads((RESULTS / kernel / "plan.json").read_text())
    except FileNotFoundError:
        return {}


def tail(path, n=40):
    try:
        lines = pathlib.Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} missing)"
    return "\n".join(lines[-n:])


def results(kernel):
    d = RESULTS / kernel / "results"
    if not (d / "uname").exists():
        pytest.fail(f"{kernel}: the guest wrote no results. Serial console "
                    f"({RESULTS / kernel / 'serial.log'}), last lines:\n{tail(RESULTS / kernel / 'serial.log')}")
    return d


def excerpt(text, head=30, last=40):
    """The start (aya's error line) and the end (where a verifier log says why) of a stderr."""
    lines = text.splitlines()
    if len(lines) <= head + last:
        return text
    return "\n".join(lines[:head] + [f"... ({len(lines) - head - last} lines) ..."] + lines[-last:])


class Run:
    """One check's `scalp-bpf run` in the guest."""

    def __init__(self, kernel, check):
        self.dir = results(kernel) / check
        if not (self.dir / "exit").exists():
            pytest.fail(f"{kernel}: check {check} did not run (errors: "
                        f"{(results(kernel) / 'errors').read_text()!r})")
        self.exit = int((self.dir / "exit").read_text())
        self.stderr = (self.dir / "stderr").read_text(errors="replace")
        self.out = self.dir / "out"
        self.workload = plan(kernel)["checks"][check]["workload"]

    def arg(self, name):
        return int(self.workload[self.workload.index(f"--{name}") + 1])

    def expect_exit(self, code):
        what = {137: " (killed by the guest's timeout: a hang)"}.get(self.exit, "")
        assert self.exit == code, (
            f"scalp-bpf run exited {self.exit}{what}, expected {code}; stderr "
            f"({self.dir / 'stderr'}):\n{excerpt(self.stderr)}")

    def table(self, name, pid=None):
        path = self.out / name
        if not path.exists():
            return []
        return [r for r in pq.read_table(path).to_pylist() if pid is None or r["process_pid"] == pid]

    def run_json(self):
        return json.loads((self.out / "run.json").read_text())

    def command_pid(self):
        [p] = [p for p in self.table("processes") if p["process_traced_reason"] == "command"]
        return p["process_pid"], p

    def disk_delta(self):
        """(reads, sectors read, writes, sectors written) the device completed during the run."""
        before = [int(x) for x in (self.dir / "stat_before").read_text().split()]
        after = [int(x) for x in (self.dir / "stat_after").read_text().split()]
        return tuple(after[i] - before[i] for i in (0, 2, 4, 6))


def test_boot(kernel):
    """The guest booted the pinned kernel, loaded its modules, mounted its disks."""
    d = results(kernel)
    assert d.joinpath("uname").read_text().strip() == plan(kernel)["release"]
    assert d.joinpath("errors").read_text() == "", d.joinpath("errors").read_text()


# Known failures, each with what was seen; strict: a pass is reported, so the entry goes.
KNOWN: dict[tuple[str, str], str] = {}
# Known intermittent failures (their issue stays open while one is listed): a failure is reported
# as an expected one with what was seen, a pass passes.
# (5.10 writeback was one until issue 17 was found: FINDINGS.md.)
FLAKY: dict[tuple[str, str], str] = {}


def test_check(kernel, check):
    if check == "noplan":
        pytest.fail(f"{kernel}: no {RESULTS / kernel / 'plan.json'}: the kernel or the guest was "
                    "not prepared (xtask said why above)")
    flaky = FLAKY.get((kernel, check))
    if flaky is not None:
        try:
            globals()[f"check_{check}"](Run(kernel, check))
        except AssertionError as e:
            pytest.xfail(f"{flaky}: {e}")
        return
    known = KNOWN.get((kernel, check))
    if known is None:
        globals()[f"check_{check}"](Run(kernel, check))
        return
    try:
        globals()[f"check_{check}"](Run(kernel, check))
    except AssertionError as e:
        pytest.xfail(f"{known}: {e}")
    pytest.fail(f"{kernel} {check} passes now: take it out of KNOWN")


def test_support(kernel):
    """`scalp-bpf check` on the kernel: exit 0, the core works, every program was loaded by the
    verifier, every tracer is ok (or degraded as NOT_OK says), and where it says the programs go
    agrees with the kernel's own list of events: block_io_start/done where the kernel has them,
    else block_rq_insert/complete; writeback_dirty_folio, else writeback_dirty_page."""
    d = results(kernel) / "support"
    if not (d / "json_exit").exists():
        pytest.fail(f"{kernel}: scalp-bpf check did not run")
    err = (d / "check.json.stderr").read_text(errors="replace")
    assert int((d / "json_exit").read_text()) == 0, err
    assert int((d / "table_exit").read_text()) == 0, (d / "check.txt.stderr").read_text()
    assert err == "", err
    report = json.loads((d / "check.json").read_text())
    assert report["verified"], report["not_verified_because"]
    assert report["core_ok"]
    assert report["kernel_release"] == plan(kernel)["release"]
    events = {line.strip() for line in (results(kernel) / "available_events").read_text().splitlines()}
    names = {e.partition(":")[2] for e in events}
    tracers = {t["tracer"]: t for t in report["tracers"]}
    for t in tracers.values():
        for a in t["attached"]:
            assert a["tracepoint"] in names, f"{t['tracer']}: {a} is not an event of this kernel"
    block = {a["program"]: a["tracepoint"] for a in tracers["blockio"]["attached"]}
    if "block:block_io_start" in events:
        assert block.get("block_io_start") == "block_io_start", block
        assert block.get("block_io_done") == "block_io_done", block
    else:
        assert "block_io_start" not in block and "block_io_done" not in block, block
        assert block.get("block_rq_insert") == "block_rq_insert", block
        assert block.get("block_rq_complete") == "block_rq_complete", block
    folio = "writeback_dirty_folio" if "writeback:writeback_dirty_folio" in events else "writeback_dirty_page"
    assert block.get("writeback_dirty_folio") == folio, block
    not_ok = {n: t["status"] for n, t in tracers.items() if t["status"] != "ok"}
    assert not_ok == NOT_OK.get(kernel, {}), {n: tracers[n]["lost"] or tracers[n]["why"] for n in not_ok}
    table = (d / "check.txt").read_text()
    for n, t in tracers.items():
        assert re.search(rf"^{n} +{t['status']} ", table, re.M), f"{n} {t['status']} not in the table"


def test_recorded(kernel):
    """Every run's run.json says, per tracer, what `check` said (the same tables decide both)."""
    d = results(kernel) / "support"
    check = {t["tracer"]: t for t in json.loads((d / "check.json").read_text())["tracers"]}
    for name in plan(kernel).get("checks", {}):
        meta = results(kernel) / name / "out" / "run.json"
        if not meta.exists():
            pytest.fail(f"{kernel}: check {name} wrote no run.json")
        recorded = json.loads(meta.read_text())["kernel_support"]
        assert recorded, f"{name}: run.json has no kernel_support"
        for t in recorded:
            assert t == check[t["tracer"]], name


def check_syscalls(r):
    """getppid, write and the legacy open: exactly `count` each; the opens all fail; the
    command's exit code comes through."""
    n = r.arg("count")
    r.expect_exit(r.arg("exit"))
    pid, proc = r.command_pid()
    assert proc["process_exit_code"] == r.arg("exit")
    totals = {}
    for row in r.table("syscalls", pid):
        c, e = totals.get(row["syscall_name"], (0, 0))
        totals[row["syscall_name"]] = (c + row["calls"], e + row["errors"])
    assert totals.get("getppid") == (n, 0), totals
    assert totals.get("write") == (n, 0), totals
    assert totals.get("open") == (n, n), totals
    assert totals.get("exit_group", (0, 0))[0] == 1, totals
    meta = r.run_json()
    assert meta["command_exit_code"] == r.arg("exit")
    assert meta["drops"] == []


def check_fileio(r):
    """Buffered writes to a file on ext4 (virtio-blk) and the fsyncs between them."""
    writes, size, every = r.arg("writes"), r.arg("size"), r.arg("fsync-every")
    r.expect_exit(0)
    pid, _ = r.command_pid()
    t = {}
    for row in r.table("fileio", pid):
        key = (row["file_kind"], row["op"])
        c, b = t.get(key, (0, 0))
        t[key] = (c + row["calls"], b + row["bytes"])
    assert t.get(("file", "write")) == (writes, writes * size), t
    assert t.get(("file", "fsync"), (0, 0))[0] == writes // every, t
    assert r.run_json()["drops"] == []


def check_blockio(r):
    """O_DIRECT 4 KiB writes then reads of the raw vdb: one request each, as /sys/block says."""
    writes, reads = r.arg("writes"), r.arg("reads")
    r.expect_exit(0)
    assert r.disk_delta() == (reads, reads * 8, writes, writes * 8), "vdb saw other I/O than the workload's"
    pid, _ = r.command_pid()
    sums = {}
    for row in r.table("blockio", pid):
        if row["device"] == "vdb":
            q, b = sums.get(row["op"], (0, 0))
            sums[row["op"]] = (q + row["requests"], b + row["bytes"])
    assert sums.get("write") == (writes, writes * BLOCK), sums
    assert sums.get("read") == (reads, reads * BLOCK), sums
    assert r.run_json()["drops"] == []


def check_http(r):
    """HTTP/1.1 over loopback, client and server in the traced process: every request counted
    on both sides, with its bytes (the capture: socket classification, user-memory copies into
    the ring, the close hook at sys_enter)."""
    n = r.arg("requests")
    r.expect_exit(0)
    pid, _ = r.command_pid()
    response = len(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    request = sum(len(f"GET /items/{i} HTTP/1.1\r\nHost: vm\r\n\r\n") for i in range(n))
    sums = {}
    for row in r.table("http_requests", pid):
        key = (row["direction"], row["http_request_method"], row["http_response_status_code"])
        c, q, a = sums.get(key, (0, 0, 0))
        sums[key] = (c + row["calls"], q + row["request_bytes"], a + row["response_bytes"])
    assert sums == {("server", "GET", 200): (n, request, n * response),
                    ("client", "GET", 200): (n, request, n * response)}, sums
    assert r.run_json()["drops"] == []


def check_writeback(r):
    """Pages the workload dirtied, written back by the flusher threads after an untraced sync:
    charged to the workload as writeback."""
    nbytes = r.arg("bytes")
    r.expect_exit(0)
    pid, _ = r.command_pid()
    data = [row for row in r.table("blockio", pid)
            if row["device"] == "vda" and row["op"] == "write" and not row["meta"]]
    by = {}
    for row in data:
        by[row["attribution"]] = by.get(row["attribution"], 0) + row["bytes"]
    assert by.get("writeback") == nbytes, by
    assert "direct" not in by, by


def test_stderr(kernel):
    """Every run's stderr is free of warnings, errors and panics, and ends with the line that
    says which tables were written."""
    d = results(kernel)
    bad = {}
    for check in plan(kernel).get("checks", {}):
        path = d / check / "stderr"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else ["(no stderr file)"]
        # A tracer the kernel does not fully support says so in one line, and only then.
        meta = d / check / "out" / "run.json"
        support = json.loads(meta.read_text())["kernel_support"] if meta.exists() else []
        notices = [f"scalp-bpf: {t['tracer']} {t['status']} on this kernel" for t in support
                   if t["status"] != "ok"]
        for n in notices:
            if sum(line.startswith(n) for line in lines) != 1:
                bad.setdefault(check, []).append(f"(not one {n!r} line)")
        hits = [line for line in lines
                if any(b in line for b in BAD_STDERR) and not line.startswith(CLOSING)
                and not any(line.startswith(n) for n in notices)]
        if not lines or not lines[-1].startswith(CLOSING):
            hits.append(f"(no closing {CLOSING!r} line)")
        if hits:
            bad.setdefault(check, []).extend(hits[:5])
    assert not bad, "\n".join(f"{c}: " + "\n    ".join(h) for c, h in bad.items())
