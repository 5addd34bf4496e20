"""Checking a run's intervals against a workload's own clock (tests/workloads/steady.py logs the
CLOCK_REALTIME nanoseconds right before and right after each of its getppid calls).

The kernel counts a call when it returns, at some moment x in [before, after]; the interval
[s, e) holds the calls that returned between the map reads that ended its predecessor and
itself. Those reads happen after the labels s and e are taken, within READ_NS. So a call must be
in [s, e) if before ≥ s + READ_NS and after ≤ e, and may be in it only if after > s and before ≤
e + READ_NS. Counted from the first interval on, the lower bound needs no allowance at all: every
call made after the first interval began that returned before the end of interval k is in
intervals 0..k, so a lost or short interval is caught however late the maps were read.

READ_NS is generous because the run loop takes an interval's end label before it reads the maps
one tracer after another; on a loaded 2-CPU machine that has taken up to ~70 ms (seen with a
benchmark running beside the tests), and once a little over 100 ms in a full test session (one
call counted beyond a 100 ms allowance). Losses are caught by the cumulative bound whatever READ_NS;
a row counted twice, by `by_interval` (one row per interval, process and name)."""
import pathlib

import pyarrow.parquet as pq

READ_NS = 150_000_000


def ns(ts):
    """A pyarrow/pandas timestamp (µs precision) in ns since the epoch."""
    return int(ts.timestamp() * 1e6) * 1000


def by_interval(out, table, pid, key=lambda r: r.get("syscall_name") or f"{r['op']}:{r['file_kind']}"):
    """{(start_ns, end_ns): {name: calls}} of one process in a table (all its sealed files);
    each (interval, process, name) must be one row."""
    d = pathlib.Path(out) / table
    result = {}
    if not d.exists() or not list(d.glob("*.parquet")):
        return result
    for r in pq.read_table(d).to_pylist():
        if r["process_pid"] != pid:
            continue
        span = (ns(r["interval_start"]), ns(r["interval_end"]))
        calls = result.setdefault(span, {})
        name = key(r)
        assert name not in calls, f"two rows for {name} in interval {span}"
        calls[name] = r["calls"]
    return result


def check_contiguous(spans, before, after):
    """Intervals follow each other; a gap is only where the workload made no call."""
    spans = sorted(spans)
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s0 < e0 <= s1 < e1, (s0, e0, s1, e1)
        if e0 != s1:
            idle = [b for b, a in zip(before, after) if a > e0 + READ_NS and b < s1]
            assert not idle, f"interval {e0}..{s1} missing, {len(idle)} calls in it"


def check_each_interval(intervals, before, after, name="getppid"):
    """Every interval holds the calls made in it, by the workload's clock."""
    spans = sorted(intervals)
    start = spans[0][0] if spans else 0
    so_far = 0
    for (s, e) in spans:
        counted = intervals[(s, e)].get(name, 0)
        must = sum(1 for b, a in zip(before, after) if b >= s + READ_NS and a <= e)
        may = sum(1 for b, a in zip(before, after) if a > s and b <= e + READ_NS)
        assert must <= counted <= may, f"interval {s}..{e}: {counted} {name} counted, {must}..{may} made"
        so_far += counted
        made = sum(1 for b, a in zip(before, after) if b >= start and a <= e)
        assert so_far >= made, f"up to {e}: {so_far} {name} counted, {made} made"
