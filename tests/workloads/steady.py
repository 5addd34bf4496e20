"""A steady workload for the durability tests: after "go" on stdin, it loops — one getppid, one
write to /dev/null, a short sleep — so that every interval of a run has rows in `syscalls` and
`fileio`, until it gets SIGUSR1 (or --seconds pass). It then prints one JSON line with the wall
clock (CLOCK_REALTIME, ns) right before and right after each getppid, so a test can tell exactly
which calls a complete interval must contain.

--distinct N makes each iteration also call one of N rarely used syscalls in turn (failing ones),
so that the syscalls table gets many distinct rows per interval (for filling a disk).
"""
import argparse
import json
import os
import signal
import sys
import time

RARE = [
    lambda: os.rmdir("/nonexistent-scalp-bpf/d"),
    lambda: os.unlink("/nonexistent-scalp-bpf/f"),
    lambda: os.stat("/nonexistent-scalp-bpf/s"),
    lambda: os.readlink("/nonexistent-scalp-bpf/l"),
    lambda: os.chdir("/nonexistent-scalp-bpf/c"),
    lambda: os.access("/nonexistent-scalp-bpf/a", os.R_OK),
    lambda: os.mkdir("/nonexistent-scalp-bpf/m/x"),
    lambda: os.rename("/nonexistent-scalp-bpf/r", "/nonexistent-scalp-bpf/s"),
    lambda: os.chmod("/nonexistent-scalp-bpf/h", 0o600),
    lambda: os.truncate("/nonexistent-scalp-bpf/t", 0),
    lambda: os.listxattr("/nonexistent-scalp-bpf/x"),
    lambda: os.statvfs("/nonexistent-scalp-bpf/v"),
    lambda: os.symlink("/x", "/nonexistent-scalp-bpf/y"),
    lambda: os.link("/nonexistent-scalp-bpf/p", "/nonexistent-scalp-bpf/q"),
    lambda: os.utime("/nonexistent-scalp-bpf/u"),
    lambda: os.chown("/nonexistent-scalp-bpf/o", 0, 0),
]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hold", action="store_true", help="print 'ready PID', wait for a line")
    p.add_argument("--sleep", type=float, default=0.002, help="seconds between iterations")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: at SIGUSR1)")
    p.add_argument("--distinct", type=int, default=0, help="also one of N failing syscalls per iteration")
    p.add_argument("--log", help="also write the JSON line to this file")
    p.add_argument("--tag", help="ignored: lets a test find this process by its command line")
    p.add_argument("--exit", type=int, default=0)
    a = p.parse_args()
    stop = False

    def on_usr1(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGUSR1, on_usr1)
    if a.hold:
        print(f"ready {os.getpid()}", flush=True)
        sys.stdin.readline()
    null = os.open("/dev/null", os.O_WRONLY)
    before, after = [], []
    end = time.monotonic() + a.seconds if a.seconds else None
    i = 0
    while not stop and (end is None or time.monotonic() < end):
        t0 = time.time_ns()
        os.getppid()
        t1 = time.time_ns()
        before.append(t0)
        after.append(t1)
        os.write(null, b"x")
        if a.distinct:
            try:
                RARE[i % min(a.distinct, len(RARE))]()
            except OSError:
                pass
        i += 1
        time.sleep(a.sleep)
    line = json.dumps({"getppid_before": before, "getppid_after": after})
    if a.log:
        with open(a.log, "w") as f:
            f.write(line + "\n")
    print(line, flush=True)
    return a.exit


if __name__ == "__main__":
    sys.exit(main())
