"""A known mix of SQL statements through the real client drivers OpenStack uses: PyMySQL for
MySQL/MariaDB and psycopg (3) for PostgreSQL. The mix is exact; the script prints a JSON line of
what it sent. With --hold it connects first, prints "ready PID" and waits for a line, so that the
connection exists before tracing starts."""
import argparse
import json
import os
import sys


def mysql_connect(a):
    import pymysql
    if a.socket:
        return pymysql.connect(unix_socket=a.socket, user=a.user, password=a.password, database=a.database)
    return pymysql.connect(host="127.0.0.1", port=a.port, user=a.user, password=a.password, database=a.database)


def pg_connect(a):
    import psycopg
    if a.socket:
        return psycopg.connect(host=a.socket, port=a.port, user=a.user, dbname=a.database)
    return psycopg.connect(host="127.0.0.1", port=a.port, user=a.user, password=a.password, dbname=a.database)


def mysql_mix(conn, n):
    cur = conn.cursor()
    done = {"select": 0, "insert": 0, "failed": 0, "ping": 0, "update": 0, "transactions": 0}
    if n["insert"]:
        cur.execute("DELETE FROM scalp_items WHERE id >= 100000")
        conn.commit()
    for i in range(n["select"]):
        cur.execute("SELECT id, v FROM scalp_items WHERE id = %s AND v <> %s", (i, f"x{i}"))
        cur.fetchall()
        done["select"] += 1
    for i in range(n["insert"]):
        cur.execute("INSERT INTO scalp_items (id, v) VALUES (%s, %s)", (100000 + i, "v" * (i % 7)))
        done["insert"] += 1
    conn.commit()
    for i in range(n["failed"]):
        try:
            cur.execute(f"SELEC {i} FROM nowhere")
        except Exception:
            done["failed"] += 1
    for _ in range(n["ping"]):
        conn.ping(reconnect=False)
        done["ping"] += 1
    for t in range(n["transactions"]):
        cur.execute("BEGIN")
        for k in range(3):
            cur.execute("UPDATE scalp_items SET v = %s WHERE id = %s", (f"t{t}", k))
            done["update"] += 1
        cur.execute("COMMIT")
        done["transactions"] += 1
    return done


def pg_mix(conn, n):
    done = {"select": 0, "insert": 0, "failed": 0, "update": 0, "transactions": 0}
    if n["insert"]:
        conn.execute("DELETE FROM scalp_items WHERE id >= 100000")
        conn.commit()
    with conn.cursor() as cur:
        for i in range(n["select"]):
            cur.execute("SELECT id, v FROM scalp_items WHERE id = %s AND v <> %s", (i, f"x{i}"))
            cur.fetchall()
            done["select"] += 1
        for i in range(n["insert"]):
            cur.execute("INSERT INTO scalp_items (id, v) VALUES (%s, %s)", (100000 + i, "v" * (i % 7)))
            done["insert"] += 1
    conn.commit()
    for i in range(n["failed"]):
        try:
            conn.execute(f"SELECT * FROM scalp_missing_{i % 3}")
        except Exception:
            conn.rollback()
            done["failed"] += 1
    for t in range(n["transactions"]):
        with conn.transaction():
            for k in range(3):
                conn.execute("UPDATE scalp_items SET v = %s WHERE id = %s", (f"t{t}", k))
                done["update"] += 1
        done["transactions"] += 1
    return done


def main():
    p = argparse.ArgumentParser()
    p.add_argument("db", choices=["mysql", "postgres"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--socket")
    p.add_argument("--user", default="scalp")
    p.add_argument("--password", default="scalp-test")
    p.add_argument("--database", default="scalp")
    p.add_argument("--select", type=int, default=0)
    p.add_argument("--insert", type=int, default=0)
    p.add_argument("--failed", type=int, default=0)
    p.add_argument("--ping", type=int, default=0)
    p.add_argument("--transactions", type=int, default=0)
    p.add_argument("--hold", action="store_true")
    a = p.parse_args()
    n = {k: getattr(a, k) for k in ["select", "insert", "failed", "ping", "transactions"]}
    conn = mysql_connect(a) if a.db == "mysql" else pg_connect(a)
    if a.hold:
        print(f"ready {os.getpid()}", flush=True)
        sys.stdin.readline()
    done = mysql_mix(conn, n) if a.db == "mysql" else pg_mix(conn, n)
    conn.close()
    print(json.dumps(done), flush=True)


if __name__ == "__main__":
    main()
