"""A small Python service for `scalp-bpf dump`: threads parked in known functions, a file and a
TCP connection held open, a config file on its command line, a child process. It prints one JSON
line of what dump should find (thread ids and the function each waits in, the connection's
ends, the packages importlib.metadata sees) and waits for its stdin to close."""
import argparse
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import threading


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def parked_in_known_function(event):
    event.wait()  # parked here


def reading_from_a_socket(conn):
    conn.recv(1)  # blocked here


def child_waits_forever():
    sys.stdin.readline()  # child parked here


def main_waits_for_stdin():
    sys.stdin.readline()  # main parked here


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config-file")
    ap.add_argument("--held-file")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        print("child ready", flush=True)
        child_waits_forever()
        return

    held = open(args.held_file, "w")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()

    event = threading.Event()
    started = {}

    def run(name, target, arg):
        def body():
            started[name] = threading.get_native_id()
            target(arg)
        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        return t

    run("parker", parked_in_known_function, event)
    run("reader", reading_from_a_socket, server)
    child = subprocess.Popen([sys.executable, __file__, "--child"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "child ready\n"
    while len(started) < 2:
        threading.Event().wait(0.01)

    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages.setdefault(normalize(name), dist.version)
    print(json.dumps({
        "pid": os.getpid(),
        "child": child.pid,
        "threads": {str(started["parker"]): "parked_in_known_function",
                    str(started["reader"]): "reading_from_a_socket",
                    str(threading.get_native_id()): "main_waits_for_stdin"},
        "held_file": os.path.realpath(held.name),
        "client": "%s:%d" % client.getsockname(),
        "server": "%s:%d" % listener.getsockname(),
        "packages": packages,
    }), flush=True)
    main_waits_for_stdin()
    child.stdin.close()
    child.wait()
    event.set()
    client.close()


if __name__ == "__main__":
    main()
