"""Known machine-level loads for tests/test_system.py. Each prints "ready PID" and waits for a
line before working (like the other workloads' --hold), then says what it did.

  burn SECONDS            spin in user space; prints "start" when it begins and
                          "done UTIME_NS" (its own user CPU time) when it stops
  direct PATH WRITES BURSTS PAUSE
                          BURSTS bursts of WRITES O_DIRECT 4 KiB writes to PATH, PAUSE seconds
                          apart (so they land in several intervals); prints "done"
  send BYTES              sends BYTES over a TCP connection to itself on 127.0.0.1, in 64 KiB
                          writes, and reads them back; prints "done"
"""
import mmap
import os
import socket
import sys
import threading
import time

BLOCK = 4096


def burn(seconds):
    print("start", flush=True)
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        for _ in range(10000):
            x += 1
    print(f"done {int(os.times().user * 1e9)}", flush=True)


def direct(path, writes, bursts, pause):
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    buf.write(b"\xa5" * BLOCK)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        for b in range(bursts):
            if b:
                time.sleep(pause)
            for i in range(writes):
                assert os.pwrite(fd, buf, i * BLOCK) == BLOCK
    finally:
        os.close(fd)
    print("done", flush=True)


def send(nbytes):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = []

    def drain():
        conn, _ = server.accept()
        total = 0
        while chunk := conn.recv(1 << 20):
            total += len(chunk)
        received.append(total)
        conn.close()

    reader = threading.Thread(target=drain)
    reader.start()
    client = socket.create_connection(server.getsockname())
    chunk = b"\x33" * 65536
    left = nbytes
    while left:
        left -= client.send(chunk[:min(left, len(chunk))])
    client.close()
    reader.join()
    assert received == [nbytes], received
    print("done", flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.readline()
    if mode == "burn":
        burn(float(args[0]))
    elif mode == "direct":
        direct(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "send":
        send(int(args[0]))
    else:
        sys.exit(f"unknown mode {mode}")
    sys.stdin.readline()


if __name__ == "__main__":
    main()
