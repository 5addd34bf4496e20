"""SQL statements from known call sites, for the Python attribution tests: the same statement
text from two functions (`load_item`, `count_item`), N times each per worker, in plain threads,
eventlet green threads, or through SQLAlchemy; with `--count-times K` count_item runs K times per
round, with `--probe` a third function (`probe_item`) sends a second statement once per round. Prints "ready PID", waits for a line, works,
prints "done", waits for stdin to close."""
import argparse
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--kind", choices=["mysql", "postgres"], default="mysql")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--mode", choices=["threads", "eventlet", "sqlalchemy"], default="threads")
ap.add_argument("--workers", type=int, default=3)
ap.add_argument("--n", type=int, default=50)
ap.add_argument("--count-times", type=int, default=1)
ap.add_argument("--probe", action="store_true")
ap.add_argument("--hold", action="store_true", help="(always holds: ready, then a line)")
a = ap.parse_args()

if a.mode == "eventlet":
    import eventlet
    eventlet.monkey_patch()

import threading  # noqa: E402

# The driver is imported before the workers start: imported by the first of several green
# threads, a module whose import yields (psycopg's pure-Python libpq wrapper runs ldconfig
# through eventlet's green subprocess) is seen half-initialized by the others.
if a.kind == "mysql":
    import pymysql  # noqa: E402
else:
    import psycopg  # noqa: E402

USER, PASSWORD, DATABASE = "scalp", "scalp-test", "scalp"
TEXT = "SELECT v FROM scalp_items WHERE id = %s"


def connect():
    if a.kind == "mysql":
        return pymysql.connect(host="127.0.0.1", port=a.port, user=USER, password=PASSWORD,
                               database=DATABASE, autocommit=True)
    return psycopg.connect(host="127.0.0.1", port=a.port, user=USER, password=PASSWORD,
                           dbname=DATABASE, autocommit=True)


def load_item(cur):
    cur.execute(TEXT, (1,))  # site load_item
    return cur.fetchall()


def count_item(cur):
    cur.execute(TEXT, (2,))  # site count_item
    return cur.fetchall()


def probe_item(cur):
    cur.execute("SELECT COUNT(*) FROM scalp_items WHERE v = %s", ("x",))  # site probe_item
    return cur.fetchall()


def worker():
    conn = connect()
    cur = conn.cursor()
    for _ in range(a.n):
        load_item(cur)  # call load_item
        for _ in range(a.count_times):
            count_item(cur)  # call count_item
        if a.probe:
            probe_item(cur)  # call probe_item
    conn.close()


def orm_load_item(conn, text):
    return conn.execute(text, {"id": 1}).fetchall()  # site orm_load_item


def orm_count_item(conn, text):
    return conn.execute(text, {"id": 2}).fetchall()  # site orm_count_item


def orm_worker(engine):
    import sqlalchemy
    text = sqlalchemy.text("SELECT v FROM scalp_items WHERE id = :id")
    with engine.connect() as conn:
        for _ in range(a.n):
            orm_load_item(conn, text)  # call orm_load_item
            orm_count_item(conn, text)  # call orm_count_item


print(f"ready {os.getpid()}", flush=True)
sys.stdin.readline()
if a.mode == "sqlalchemy":
    import sqlalchemy
    driver = "mysql+pymysql" if a.kind == "mysql" else "postgresql+psycopg"
    engine = sqlalchemy.create_engine(f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{a.port}/{DATABASE}",
                                      pool_size=a.workers)
    workers = [threading.Thread(target=orm_worker, args=(engine,)) for _ in range(a.workers)]
else:
    workers = [threading.Thread(target=worker) for _ in range(a.workers)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print("done", flush=True)
sys.stdin.readline()
