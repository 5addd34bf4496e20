"""wsgi_app served by eventlet's wsgi server (as Glance and older Nova API services are): one
process, one OS thread, a greenthread per connection, HTTP/1.1 keep-alive.

    python eventlet_server.py --port 8090 --log access.log [--pid-file F]

The access log is eventlet's own line per request: ... "METHOD PATH HTTP/1.1" STATUS BODY_BYTES
SECONDS. "listening" is printed on stdout once the socket listens.
"""
import argparse
import os
import sys

import eventlet

# Before anything imports socket, select or the DB drivers: green I/O everywhere.
eventlet.monkey_patch()

import eventlet.wsgi  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsgi_app  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--pid-file")
    a = p.parse_args()
    sock = eventlet.listen(("127.0.0.1", a.port))
    if a.pid_file:
        with open(a.pid_file, "w") as f:
            f.write(str(os.getpid()))
    log = open(a.log, "a", buffering=1)
    print("listening", flush=True)
    eventlet.wsgi.server(sock, wsgi_app.application, log=log, log_output=True, keepalive=True,
                         max_size=64, debug=False)


if __name__ == "__main__":
    main()
