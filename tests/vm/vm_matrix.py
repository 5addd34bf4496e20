"""pytest plugin of the kernel matrix (loaded by xtask with -p vm_matrix, never by the host
suite): after the checks, what `scalp-bpf check` printed on each kernel, then one table of
kernel × check, PASS or FAIL, so a run says at a glance what works where. The reasons are in
pytest's failure report above it."""
import os
import pathlib

OUTCOMES = {}


def _cell(nodeid):
    """('5.10', 'syscalls') from '…::test_check[5.10-syscalls]', ('5.10', 'boot') from
    '…::test_boot[5.10]'."""
    name, _, param = nodeid.rpartition("::")[2].partition("[")
    param = param.rstrip("]")
    if name == "test_check":
        kernel, _, check = param.partition("-")
        return kernel, check
    return param, name.removeprefix("test_")


def pytest_runtest_logreport(report):
    cell = _cell(report.nodeid)
    # A failure in setup or teardown counts too; a pass only from the test's own call.
    if report.failed or (report.when == "call" and cell not in OUTCOMES):
        OUTCOMES[cell] = {"passed": "PASS", "failed": "FAIL"}.get(report.outcome, report.outcome.upper())


def pytest_terminal_summary(terminalreporter):
    if not OUTCOMES:
        return
    kernels = list(dict.fromkeys(k for k, _ in OUTCOMES))
    checks = list(dict.fromkeys(c for _, c in OUTCOMES))
    width = max(len(c) for c in checks) + 2
    tr = terminalreporter
    results = pathlib.Path(os.environ.get("SCALP_VM_RESULTS", "target/vm"))
    for k in kernels:
        table = results / k / "results" / "support" / "check.txt"
        tr.section(f"scalp-bpf check on {k}")
        tr.write_line(table.read_text().rstrip() if table.exists() else f"({table} missing)")
    tr.section("kernel matrix")
    tr.write_line("kernel".ljust(8) + "".join(c.ljust(width) for c in checks))
    for k in kernels:
        tr.write_line(k.ljust(8) + "".join(OUTCOMES.get((k, c), "-").ljust(width) for c in checks))
