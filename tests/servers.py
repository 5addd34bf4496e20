"""Real database servers for the SQL tests, from Debian's packages, started here on 127.0.0.1
and on Unix sockets in a scratch directory, and stopped afterwards.

    python3 tests/servers.py start   # leave them running (for development)
    python3 tests/servers.py stop
"""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

BASE = pathlib.Path(os.environ.get("SCALP_TEST_SERVERS", "/tmp/scalp-test-servers"))
PG_BIN = next(iter(sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
USER, PASSWORD, DATABASE = "scalp", "scalp-test", "scalp"


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_for(path_or_port, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(path_or_port, int):
            if not port_free(path_or_port):
                return
        elif pathlib.Path(path_or_port).exists():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


class MariaDB:
    """mariadbd with its own data directory, TCP on 127.0.0.1 and a Unix socket."""

    def __init__(self, base=None, port=3306):
        # One directory per port: test sessions running side by side each get their own server.
        self.base = pathlib.Path(base or BASE / f"mariadb-{port}")
        self.port = port
        self.socket = self.base / "mysqld.sock"
        self.user, self.password, self.database = USER, PASSWORD, DATABASE

    def start(self):
        # A server left by an earlier run on this directory goes first.
        left = ["-f", f"datadir={self.base / 'data'}"]
        subprocess.run(["pkill", *left], capture_output=True)
        for _ in range(300):
            gone = subprocess.run(["pgrep", *left], capture_output=True).returncode != 0
            if gone and port_free(self.port):
                break
            time.sleep(0.1)
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} is taken by another server")
        if self.base.exists():
            shutil.rmtree(self.base)
        (self.base / "data").mkdir(parents=True)
        shutil.chown(self.base, "mysql", "mysql")
        shutil.chown(self.base / "data", "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--user=mysql", f"--datadir={self.base / 'data'}",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(
            ["mariadbd", "--user=mysql", f"--datadir={self.base / 'data'}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--pid-file={self.base / 'mysqld.pid'}",
             f"--log-error={self.base / 'error.log'}", "--skip-log-bin", "--performance-schema=OFF"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(self.socket, "mariadbd")
        wait_for(self.port, "mariadbd")
        sql = (f"CREATE DATABASE {self.database}; "
               f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}'; "
               f"CREATE USER '{self.user}'@'localhost' IDENTIFIED BY '{self.password}'; "
               f"GRANT ALL ON *.* TO '{self.user}'@'127.0.0.1'; GRANT ALL ON *.* TO '{self.user}'@'localhost';")
        subprocess.run(["mariadb", f"--socket={self.socket}", "-u", "root", "-e", sql], check=True)
        return self

    def sql(self, sql):
        """Runs SQL as root over the socket; returns tab-separated rows."""
        r = subprocess.run(["mariadb", f"--socket={self.socket}", "-u", "root", "-N", "-B", self.database,
                            "-e", sql], check=True, capture_output=True, text=True)
        return r.stdout

    def status(self):
        """SHOW GLOBAL STATUS as a dict of ints."""
        out = {}
        for line in self.sql("SHOW GLOBAL STATUS").splitlines():
            k, _, v = line.partition("\t")
            if v.isdigit():
                out[k] = int(v)
        return out

    def stop(self):
        pid_file = self.base / "mysqld.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                return
            if getattr(self, "proc", None) is not None and self.proc.pid == pid:
                self.proc.wait(timeout=30)  # our child: reap it, or it lingers as a zombie
                return
            try:
                for _ in range(300):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                pass


class Postgres:
    """A PostgreSQL cluster of its own, TCP on 127.0.0.1 and a Unix socket, pg_stat_statements on."""

    def __init__(self, base=None, port=5432):
        self.base = pathlib.Path(base or BASE / f"postgres-{port}")
        self.port = port
        self.socket_dir = self.base
        self.user, self.password, self.database = USER, PASSWORD, DATABASE

    def _as_postgres(self, *cmd, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], check=True,
                              capture_output=True, **kw)

    def start(self):
        data = self.base / "data"
        if data.exists():
            self.stop()
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} is taken by another server")
        if self.base.exists():
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True)
        shutil.chown(self.base, "postgres", "postgres")
        self._as_postgres(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres")
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.base}'\n"
                    "shared_preload_libraries = 'pg_stat_statements'\n"
                    "pg_stat_statements.track_utility = on\nfsync = off\n")
        self._as_postgres(PG_BIN / "pg_ctl", "-D", data, "-l", self.base / "log", "-w", "start")
        psql = [PG_BIN / "psql", "-h", self.base, "-p", self.port, "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        self._as_postgres(*psql, "-c", f"CREATE USER {self.user} SUPERUSER PASSWORD '{self.password}'")
        self._as_postgres(*psql, "-c", f"CREATE DATABASE {self.database} OWNER {self.user}")
        self._as_postgres(*psql, "-d", self.database, "-c", "CREATE EXTENSION pg_stat_statements")
        return self

    def psql(self, sql, database=None):
        """Runs SQL as the superuser; returns the unaligned, tuples-only output."""
        r = self._as_postgres(PG_BIN / "psql", "-h", self.base, "-p", self.port, "-U", "postgres",
                              "-d", database or self.database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql, text=True)
        return r.stdout

    def stop(self):
        data = self.base / "data"
        if data.exists():
            subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data),
                            "-m", "fast", "-w", "stop"], capture_output=True)


def pick_port(preferred):
    """The preferred port if free, else the first free one of preferred+10000, +10001, …"""
    for port in [preferred, *range(preferred + 10000, preferred + 10020)]:
        if port_free(port):
            return port
    raise RuntimeError(f"no free port near {preferred}")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "start"
    servers = [MariaDB(), Postgres()]
    for s in servers:
        s.start() if what == "start" else s.stop()
    print(what, "ok")
