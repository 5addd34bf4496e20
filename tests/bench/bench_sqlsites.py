"""`cargo xtask bench sqlsites`: what the Python call sites of SQL statements cost. A Python
client (PyMySQL, one connection, `SELECT v FROM scalp_items WHERE id = %s` in a loop from a
function 12 frames deep) against the tests' MariaDB, in three configurations alternating in
rotating order: untraced, traced without call sites (the default), traced with `--sql-code`.

Per run: the client's wall time and CPU time (its rusage) per statement; for the traced runs,
whether sql_statements counted every statement (and, with call sites, every one at the right
line) with nothing dropped. Then one pass of each traced configuration with bpf_stats on:
sys_enter's and sys_exit's mean run time and their total per statement.
"""
import argparse
import os
import subprocess
import sys
import time

from common import (ProgramTimes, Scalp, fmt, log, main_guard, median, rotation, scratch_dir, servers,
                    sql_port_args, start_server, table)

CLIENT = r'''
import os, sys, time, pymysql
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = pymysql.connect(host="127.0.0.1", port=port, user="scalp", password="scalp-test", database="scalp",
                       autocommit=True)
cur = conn.cursor()
def query():
    cur.execute("SELECT v FROM scalp_items WHERE id = %s", (1,))  # the call site
    return cur.fetchall()
def deeper(k):
    return deeper(k - 1) if k else query()
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
# The connection was opened before tracing: its first statement is where the capture picks it
# up (a send the kernel has no verdict for yet carries no stack). Not one of the timed ones.
cur.execute("SELECT 1")
cur.fetchall()
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(n):
    deeper(10)
print(time.perf_counter() - t0, time.process_time() - c0, flush=True)
'''
SITE_LINE = next(i for i, line in enumerate(CLIENT.splitlines(), 1) if line.endswith("# the call site"))


class Client:
    def __init__(self, port, n):
        # A file, not -c: frames of "<string>" count as the interpreter's own.
        path = scratch_dir() / "sqlsites_client.py"
        path.write_text(CLIENT)
        self.proc = subprocess.Popen([sys.executable, str(path), str(port), str(n)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"client said {line!r}")
        self.pid = int(line.split()[1])

    def run(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        wall, cpu = map(float, self.proc.stdout.readline().split())
        self.proc.stdin.close()
        self.proc.wait(60)
        return wall, cpu


def main(cleanup):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scalp", required=True)
    ap.add_argument("--statements", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    db = start_server(cleanup, servers.MariaDB(port=servers.pick_port(3306)))
    subprocess.run(["mariadb", f"--socket={db.socket}", "-u", "root", db.database, "-e",
                    "CREATE TABLE IF NOT EXISTS scalp_items (id INT PRIMARY KEY, v VARCHAR(64));"
                    "DELETE FROM scalp_items; INSERT INTO scalp_items VALUES (1, 'b')"], check=True)
    configs = {"untraced": None, "no-sql-code": [], "call sites": ["--sql-code"]}
    per = {name: [] for name in configs}
    checks = []
    for r in range(a.rounds):
        for name in rotation(list(configs), r):
            client = Client(db.port, a.statements)
            scalp = None
            if configs[name] is not None:
                scalp = Scalp(cleanup, a.scalp, [client.pid],
                              ["--tracers", "syscalls,sql", *sql_port_args(a.scalp, db), *configs[name]])
            wall, cpu = client.run()
            per[name].append((wall / a.statements * 1e6, cpu / a.statements * 1e6))
            if scalp:
                scalp.stop()
                rows = [x for x in scalp.table("sql_statements") if "scalp_items" in x["db_query_text"]]
                calls = sum(x["calls"] for x in rows)
                sited = sum(x["calls"] for x in rows if x["code_line_number"] == SITE_LINE
                            and x["code_function_name"] == "query")
                checks.append((name, calls, sited, scalp.drops()))
                scalp.remove()
            log(f"round {r + 1} {name}: {per[name][-1][0]:.1f} µs wall, {per[name][-1][1]:.1f} µs CPU per statement")
    base_wall = median([w for w, _ in per["untraced"]])
    base_cpu = median([c for _, c in per["untraced"]])
    rows = []
    for name in configs:
        wall, cpu = median([w for w, _ in per[name]]), median([c for _, c in per[name]])
        rows.append([name, fmt(wall, 1), fmt(wall - base_wall, 2), fmt(cpu, 1), fmt(cpu - base_cpu, 2)])
    print(table(["configuration", "µs/statement (wall)", "added", "client CPU µs/statement", "added"], rows))
    ok = True
    for name, calls, sited, drops in checks:
        want_sited = a.statements if name == "call sites" else 0
        if calls != a.statements or sited != want_sited or drops:
            ok = False
            log(f"CHECK FAILED {name}: {calls} statements, {sited} at the call site, drops {drops}")
    log(f"checks: {len(checks)} traced runs, every statement counted, call sites exact: {ok}")

    # Program time per statement, one pass per traced configuration.
    prog_rows = []
    for name in ["no-sql-code", "call sites"]:
        client = Client(db.port, a.statements)
        scalp = Scalp(cleanup, a.scalp, [client.pid],
                      ["--tracers", "syscalls,sql", *sql_port_args(a.scalp, db), *configs[name]])
        with ProgramTimes(scalp) as times:
            client.run()
        scalp.stop()
        scalp.remove()
        by = times.by_name()
        total = sum(t for _, t in by.values())
        for prog in ("sys_enter", "sys_exit"):
            runs, ns = by.get(prog, (0, 0))
            prog_rows.append([name, prog, fmt(runs), fmt(ns / runs if runs else None)])
        prog_rows.append([name, "all, per statement", "", fmt(total / a.statements)])
    print(table(["configuration", "program", "runs", "mean ns"], prog_rows))
    return ok


if __name__ == "__main__":
    main_guard(main)
