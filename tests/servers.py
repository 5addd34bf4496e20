"""Real servers for the tests, started here on 127.0.0.1 (and Unix sockets) in a scratch
directory, and stopped afterwards: MariaDB and PostgreSQL from Debian's packages for the SQL
tests, and an S3-compatible object store (s3s-fs, from crates.io, installed by `cargo xtask
setup`) for shipping.

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


S3S_FS = shutil.which("s3s-fs") or str(pathlib.Path.home() / ".cargo" / "bin" / "s3s-fs")


class S3:
    """s3s-fs: a real S3 server (SigV4 authentication, the S3 REST API over HTTP) storing each
    bucket as a directory under its root. It can be stopped and started again on the same data
    (tests of failed uploads)."""

    def __init__(self, base=None, port=8014):
        self.base = pathlib.Path(base or BASE / f"s3-{port}")
        self.port = port
        self.root = self.base / "data"
        self.access_key, self.secret_key = "scalp-test", "scalp-test-secret"
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def env(self):
        """The environment scalp-bpf (object_store) reads its S3 settings from."""
        return {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def start(self, fresh=True):
        left = ["-f", f"s3s-fs .*{self.root}"]
        subprocess.run(["pkill", *left], capture_output=True)
        for _ in range(100):
            if port_free(self.port):
                break
            time.sleep(0.1)
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} is taken by another server")
        if fresh and self.base.exists():
            shutil.rmtree(self.base)
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.base / "s3s-fs.log", "ab")
        self.proc = subprocess.Popen(
            [S3S_FS, "--host", "127.0.0.1", "--port", str(self.port), "--access-key", self.access_key,
             "--secret-key", self.secret_key, str(self.root)],
            stdout=log, stderr=log, start_new_session=True)
        wait_for(self.port, "s3s-fs")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def filesystem(self):
        """pyarrow's S3 client on this server."""
        from pyarrow import fs
        return fs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key,
                               endpoint_override=f"127.0.0.1:{self.port}", scheme="http",
                               region="us-east-1", allow_bucket_creation=True)

    def storage_options(self):
        """polars' (object_store's) S3 settings for this server."""
        return {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key,
                "aws_region": "us-east-1", "aws_endpoint_url": self.endpoint, "aws_allow_http": "true"}

    def create_bucket(self, name):
        self.filesystem().create_dir(name)

    def objects(self, prefix):
        """{key under prefix: size} of every object, listed through the S3 API."""
        from pyarrow import fs
        selector = fs.FileSelector(prefix, recursive=True, allow_not_found=True)
        infos = self.filesystem().get_file_info(selector)
        return {i.path[len(prefix) + 1:]: i.size for i in infos if i.type == fs.FileType.File}


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
