"""Paced file writers for the service-mix benchmark; each runs until SIGTERM.

    writer.py fsync --dir D [--rate 100] [--bytes 8192]
        appends `bytes` and fsyncs, `rate` times a second (a journal, a database's log);
    writer.py buffered --dir D [--mib-per-s 4] [--chunk 65536] [--files 8] [--file-mib 16]
        overwrites a ring of files with `chunk`-byte pwrites at `mib-per-s`, never syncing: the
        kernel's flusher writes the pages back (a service writing logs, images, caches).

Prints "ready PID" once its files are open. Exactly one write syscall per fsync (fsync mode) and
one pwrite per chunk, so /proc/PID/io (syscw, wchar) counts the work done from outside.
"""
import argparse
import os
import signal
import sys
import time


def paced(rate):
    """Yields at `rate` per second; a schedule that fell more than a second behind restarts."""
    period, start, i = 1.0 / rate, time.monotonic(), 0
    while True:
        target = start + i * period
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        elif now - target > 1.0:
            start, i = now, 0
        yield
        i += 1


def fsync_writer(a):
    path = os.path.join(a.dir, f"journal-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"j" * a.bytes
    limit = 64 << 20
    print("ready", os.getpid(), flush=True)
    written = 0
    for _ in paced(a.rate):
        if written >= limit:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            written = 0
        written += os.write(fd, buf)
        os.fsync(fd)


def buffered_writer(a):
    size = a.file_mib << 20
    fds = [os.open(os.path.join(a.dir, f"data-{os.getpid()}-{i}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
           for i in range(a.files)]
    buf = b"b" * a.chunk
    per_file = size // a.chunk
    print("ready", os.getpid(), flush=True)
    n = 0
    for _ in paced(a.mib_per_s * (1 << 20) / a.chunk):
        fd = fds[(n // per_file) % len(fds)]
        os.pwrite(fd, buf, (n % per_file) * a.chunk)
        n += 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fsync", "buffered"])
    p.add_argument("--dir", required=True)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--bytes", type=int, default=8192)
    p.add_argument("--mib-per-s", type=float, default=4)
    p.add_argument("--chunk", type=int, default=65536)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--file-mib", type=int, default=16)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fsync_writer(a) if a.mode == "fsync" else buffered_writer(a)


if __name__ == "__main__":
    main()
