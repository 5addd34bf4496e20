"""Deterministic file and block I/O for the acceptance tests: each mode makes exactly the calls
and I/O its arguments say. With --hold it prints "ready PID" and waits for a line first; with
--hold-after it prints "done PID" and waits again before exiting."""
import argparse
import mmap
import os
import socket
import sys

BLOCK = 4096


def hold(word):
    print(f"{word} {os.getpid()}", flush=True)
    sys.stdin.readline()


def direct(path, writes, reads):
    """O_DIRECT: `writes` 4 KiB writes then `reads` 4 KiB reads, one block at a time."""
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    buf.write(b"\xa5" * BLOCK)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        for i in range(writes):
            assert os.pwrite(fd, buf, i * BLOCK) == BLOCK
        for i in range(reads):
            assert os.preadv(fd, [buf], i * BLOCK) == BLOCK
    finally:
        os.close(fd)


def buffered(path, nbytes, fsync):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\x5a" * 65536
    left = nbytes
    while left:
        left -= os.write(fd, chunk[:min(left, len(chunk))])
    if fsync:
        os.fsync(fd)
    os.close(fd)


def read_all(path):
    fd = os.open(path, os.O_RDONLY)
    total = 0
    while True:
        n = len(os.read(fd, 1 << 20))
        if n == 0:
            break
        total += n
    os.close(fd)
    print(f"read {total}", flush=True)


def kinds(path):
    """3 writes of 1000 bytes to a file, 2 of 2000 to a pipe, 1 of 3000 to a socket; then the
    same reads back."""
    f = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    r, w = os.pipe()
    a, b = socket.socketpair()
    for _ in range(3):
        assert os.write(f, b"f" * 1000) == 1000
    for _ in range(2):
        assert os.write(w, b"p" * 2000) == 2000
    assert os.write(a.fileno(), b"s" * 3000) == 3000
    os.lseek(f, 0, os.SEEK_SET)
    for _ in range(3):
        assert len(os.read(f, 1000)) == 1000
    for _ in range(2):
        assert len(os.read(r, 2000)) == 2000
    got = 0
    while got < 3000:
        got += len(os.read(b.fileno(), 3000 - got))
    for fd in (f, r, w):
        os.close(fd)
    a.close()
    b.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["direct", "buffered", "read", "kinds"])
    p.add_argument("--path", required=True)
    p.add_argument("--writes", type=int, default=0)
    p.add_argument("--reads", type=int, default=0)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--fsync", action="store_true")
    p.add_argument("--hold", action="store_true")
    p.add_argument("--hold-after", action="store_true")
    a = p.parse_args()
    if a.hold:
        hold("ready")
    if a.mode == "direct":
        direct(a.path, a.writes, a.reads)
    elif a.mode == "buffered":
        buffered(a.path, a.bytes, a.fsync)
    elif a.mode == "read":
        read_all(a.path)
    else:
        kinds(a.path)
    if a.hold_after:
        hold("done")


if __name__ == "__main__":
    main()
