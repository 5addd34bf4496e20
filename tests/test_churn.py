"""Process churn: a parent forking short-lived children (some exec, some threaded) is followed
child by child with exact counts, and the kernel maps give back every ended child's entries, read
from scalp-bpf's own maps through the bpf syscall (tests/bpfmaps.py). The long version, with RSS
over minutes, is `cargo xtask bench churn`."""
import json
import math
import threading
import time

import bpfmaps
from conftest import WORKLOADS, Held, Scalp, rows, run_json, wait_for

CHURN = WORKLOADS / "churn.py"
RATE = 200
# The README's figure: the maps empty out after 600 short-lived children.
CHILDREN = 600
THREAD_EVERY = 7
# Maps with entries per process, and how many the still-traced parent may keep (one per syscall
# or file it uses itself).
PER_PROCESS = ["SYSCALL_STATS", "FILEIO_STATS", "FILE_STATS", "BLOCK_STATS"]
PARENT_ENTRIES = 32
# The per-CPU slots in front of SYSCALL_STATS: after the churn only the parent may hold any.
SLOTS = ["SYSCALL_SLOTS"]


def test_children_are_counted_exactly_and_their_map_entries_reaped(out, tmp_path):
    work = Held("--rate", RATE, "--count", CHILDREN, "--dir", tmp_path / "files", "--hold-after",
                "--thread-every", THREAD_EVERY, "--exec-every", 10, "--sync-every", 50, script=CHURN)
    try:
        scalp = Scalp(out, "--pid", work.pid, "--interval", "200ms", "--files", 8).wait_ready()
        # The maps' peak, sampled every few ms while the children come and go (a sample just
        # after an interval's reap sees few entries).
        peak, churning = {}, threading.Event()

        def sample():
            while churning.is_set():
                for name, n in bpfmaps.snapshot(scalp.proc.pid).items():
                    peak[name] = max(peak.get(name, 0), n)
                time.sleep(0.01)

        churning.set()
        sampler = threading.Thread(target=sample)
        sampler.start()
        work.go()
        try:
            while True:
                line = work.readline()
                assert line, "the churn workload ended early"
                if line.startswith("idle "):
                    break
                report = json.loads(line)
                if report.get("done"):
                    forked = report["forked"]
        finally:
            churning.clear()
            sampler.join()
        # Ended children are flushed in their last interval, then reaped from the maps.
        settled = {}

        def reaped():
            settled.clear()
            settled.update(bpfmaps.snapshot(scalp.proc.pid))
            # A map missing from the snapshot is a failure, not an empty map.
            missing = {"TRACED", *SLOTS, *PER_PROCESS} - set(settled)
            assert not missing, f"scalp-bpf holds no {missing} (maps: {sorted(settled)})"
            owners = bpfmaps.slot_tgids(scalp.proc.pid)
            settled["slot owners"] = {m: sorted(owners.get(m, {})) for m in SLOTS}
            return (settled["TRACED"] == 1
                    and all(set(owners.get(m, {})) <= {work.pid} for m in SLOTS)
                    and all(settled[m] <= PARENT_ENTRIES for m in PER_PROCESS))

        wait_for(reaped, 10, "the ended children's map entries to be reaped", scalp.proc)
        assert work.finish() == 0
        assert scalp.wait() == 0, scalp.stderr
    finally:
        work.kill()

    print(f"forked {forked}; peak entries {peak}; after {settled}")
    assert forked == CHILDREN
    # The churn did fill the maps: the check above is not vacuous.
    assert {*SLOTS, *PER_PROCESS} <= set(peak), peak
    assert peak["SYSCALL_SLOTS"] > 4 * PARENT_ENTRIES, peak
    assert peak["FILEIO_STATS"] > PARENT_ENTRIES, peak
    children = [p for p in rows(out, "processes") if p["process_parent_pid"] == work.pid]
    assert len(children) == forked
    unended = [p for p in children if p["process_end_time"] is None or p["process_exit_code"] != 0]
    assert not unended, (unended[:3], run_json(out)["drops"])
    pids = {p["process_pid"] for p in children}
    # Each child calls getppid 20 times, and 10 more from a thread when i % THREAD_EVERY == 0.
    getppid = sum(r["calls"] for r in rows(out, "syscalls")
                  if r["process_pid"] in pids and r["syscall_name"] == "getppid")
    assert getppid == 20 * forked + 10 * math.ceil(forked / THREAD_EVERY)
    assert run_json(out)["drops"] == []
