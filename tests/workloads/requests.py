"""A stand-in for a service under a CI load test: R "requests", each running K SQL statements
through PyMySQL (over TCP) and appending a record to a log file with F fsyncs. A patch that adds
a query per request or more fsyncs is what `scalp-bpf diff` must catch."""
import argparse
import os

import pymysql

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--user", default="scalp")
p.add_argument("--password", default="scalp-test")
p.add_argument("--database", default="scalp")
p.add_argument("--requests", type=int, default=200)
p.add_argument("--statements", type=int, default=1, help="SQL statements per request")
p.add_argument("--fsyncs", type=int, default=1, help="fsyncs per request")
p.add_argument("--log", required=True)
p.add_argument("--extra", help="one more statement, run once at the end")
a = p.parse_args()

conn = pymysql.connect(host="127.0.0.1", port=a.port, user=a.user, password=a.password, database=a.database)
cur = conn.cursor()
fd = os.open(a.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
record = b"r" * 511 + b"\n"
for i in range(a.requests):
    for s in range(a.statements):
        cur.execute("SELECT v FROM scalp_items WHERE id = %s", (i % 3,))
        cur.fetchall()
    os.write(fd, record)
    for _ in range(a.fsyncs):
        os.fsync(fd)
os.close(fd)
if a.extra:
    cur.execute(a.extra)
    cur.fetchall()
conn.close()
