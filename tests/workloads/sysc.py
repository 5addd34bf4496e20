"""Deterministic syscall workloads for the acceptance tests.

The test decides exactly which syscalls run: each option below makes a known number of one kind
of syscall. With --hold the process prints "ready PID" and waits for a line on stdin before
working, so that a tracer can attach to it first.
"""
import argparse
import ctypes
import os
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15


def set_comm(name: str) -> None:
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def getppid_loop(n: int) -> None:
    for _ in range(n):
        os.getppid()


def failing_openat(n: int) -> None:
    for _ in range(n):
        try:
            os.open("/nonexistent-scalp-bpf/file", os.O_RDONLY)
        except FileNotFoundError:
            pass


def failing_rmdir(n: int) -> None:
    for _ in range(n):
        try:
            os.rmdir("/nonexistent-scalp-bpf/dir")
        except FileNotFoundError:
            pass


def hold(word: str = "ready") -> None:
    print(f"{word} {os.getpid()}", flush=True)
    sys.stdin.readline()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--comm", help="set the comm (prctl PR_SET_NAME) first")
    p.add_argument("--hold", action="store_true", help="print 'ready PID', wait for a line")
    p.add_argument("--getppid", type=int, default=0)
    p.add_argument("--fail-openat", type=int, default=0)
    p.add_argument("--fail-rmdir", type=int, default=0)
    p.add_argument("--fork-getppid", type=int, default=-1,
                   help="fork a child that makes this many getppid calls; print 'child PID'")
    p.add_argument("--hold-after", action="store_true",
                   help="after the work, print 'done PID' and wait for a line")
    p.add_argument("--exit", type=int, default=0)
    p.add_argument("--leader-exits-first", type=float, default=0, metavar="SECONDS",
                   help="the main thread ends first (pthread_exit; the process shows as a zombie "
                        "while its other thread lives); a second thread does the work after "
                        "SECONDS, then ends the process with --exit")
    a = p.parse_args()
    if a.comm:
        set_comm(a.comm)
    if a.hold:
        hold()
    if a.leader_exits_first:
        def rest() -> None:
            time.sleep(a.leader_exits_first)
            work(a)
            os._exit(a.exit)

        threading.Thread(target=rest).start()
        libc.pthread_exit(None)
    work(a)
    sys.stdout.flush()
    return a.exit


def work(a) -> None:
    getppid_loop(a.getppid)
    failing_openat(a.fail_openat)
    failing_rmdir(a.fail_rmdir)
    if a.fork_getppid >= 0:
        pid = os.fork()
        if pid == 0:
            getppid_loop(a.fork_getppid)
            os._exit(0)
        print(f"child {pid}", flush=True)
        os.waitpid(pid, 0)
    if a.hold_after:
        hold("done")


if __name__ == "__main__":
    sys.exit(main())
