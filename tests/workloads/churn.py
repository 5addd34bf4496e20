"""Process churn: a parent that forks short-lived children constantly, as a pre-fork server or a
job runner does. Each child makes some syscalls and file I/O and exits; every --exec-every-th
child execs /bin/true instead, every --thread-every-th one runs a second thread, every
--sync-every-th one fdatasyncs its file. The children overwrite a rolling set of --files files in
--dir without truncating them, so their pages are written back after the child has ended.

With --count the parent forks exactly that many children (at --rate), with no time limit.
The parent keeps at most --max-live children alive and reaps them with waitpid. It prints a JSON
line every second ({"forked": N, "live": L, "elapsed": S}) and a last one with "done": true.
With --hold it first prints "ready PID" and waits for a line on stdin; with --hold-after it
prints "idle PID" after the churn and waits for a line before exiting."""
import argparse
import json
import os
import sys
import threading
import time


def child_work(i: int, a) -> None:
    for _ in range(20):
        os.getppid()
    path = os.path.join(a.dir, f"churn-{i % a.files}.dat")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.pwrite(fd, bytes([i & 0xFF]) * 8192, 0)
    if a.sync_every and i % a.sync_every == 0:
        os.fdatasync(fd)
    os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    os.read(fd, 8192)
    os.close(fd)
    os.stat(a.dir)
    try:
        os.open(os.path.join(a.dir, "missing"), os.O_RDONLY)
    except FileNotFoundError:
        pass
    if a.thread_every and i % a.thread_every == 0:
        t = threading.Thread(target=lambda: [os.getppid() for _ in range(10)])
        t.start()
        t.join()
    if a.exec_every and i % a.exec_every == 0:
        os.execv("/bin/true", ["true"])


def reap(live: set, block: bool) -> None:
    while live:
        pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        live.discard(pid)
        block = False


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, default=300, help="children forked per second")
    p.add_argument("--seconds", type=float, default=60, help="how long to churn")
    p.add_argument("--count", type=int, default=0,
                   help="fork exactly this many children (at --rate), however long it takes")
    p.add_argument("--dir", required=True, help="where the children write their files")
    p.add_argument("--files", type=int, default=64)
    p.add_argument("--max-live", type=int, default=64)
    p.add_argument("--exec-every", type=int, default=10)
    p.add_argument("--thread-every", type=int, default=7)
    p.add_argument("--sync-every", type=int, default=50)
    p.add_argument("--hold", action="store_true", help="print 'ready PID', wait for a line")
    p.add_argument("--hold-after", action="store_true", help="print 'idle PID', wait for a line")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    if a.hold:
        print(f"ready {os.getpid()}", flush=True)
        sys.stdin.readline()
    live: set = set()
    forked = 0
    start = time.monotonic()
    next_report = start + 1
    while True:
        now = time.monotonic()
        elapsed = now - start
        if (forked >= a.count) if a.count else (elapsed >= a.seconds):
            break
        if now >= next_report:
            print(json.dumps({"forked": forked, "live": len(live), "elapsed": round(elapsed, 3)}),
                  flush=True)
            next_report += 1
        due = start + forked / a.rate
        if due > now:
            reap(live, False)
            time.sleep(min(due - now, 0.05))
            continue
        if len(live) >= a.max_live:
            reap(live, True)
        pid = os.fork()
        if pid == 0:
            try:
                child_work(forked, a)
            finally:
                os._exit(0)
        live.add(pid)
        forked += 1
        reap(live, False)
    reap(live, True)
    print(json.dumps({"forked": forked, "live": 0, "elapsed": round(time.monotonic() - start, 3),
                      "done": True}), flush=True)
    if a.hold_after:
        print(f"idle {os.getpid()}", flush=True)
        sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
