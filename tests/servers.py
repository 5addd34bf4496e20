"""Real servers for the tests, started here on 127.0.0.1 (and Unix sockets) in a scratch
directory, and stopped afterwards: MariaDB, PostgreSQL, RabbitMQ and memcached from Debian's
packages, and an S3-compatible object store (s3s-fs, from crates.io, installed by `cargo xtask
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


class RabbitMQ:
    """A private RabbitMQ node (Debian's rabbitmq-server) on 127.0.0.1: its own node name, data,
    logs, Erlang cookie, distribution and epmd ports, so it neither sees nor disturbs a system
    node on 5672/25672/4369. No plugins: counters come from `rabbitmqctl`."""

    def __init__(self, base=None, port=5672):
        self.base = pathlib.Path(base or BASE / f"rabbitmq-{port}")
        self.port = port
        self.dist_port = port + 20000
        self.epmd_port = port + 30000
        self.node = f"scalp{port}@localhost"
        self.user, self.password = "scalp", PASSWORD
        self.url = f"rabbit://{self.user}:{self.password}@127.0.0.1:{port}/"
        self.startup_s = None

    def _env(self):
        env = dict(os.environ)
        env.update({
            # The cookie lives in $HOME: the server and rabbitmqctl must share it.
            "HOME": str(self.base),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
        })
        return env

    def ctl(self, *args, timeout=60):
        """Runs rabbitmqctl against this node; returns its stdout."""
        r = subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, *args], env=self._env(),
                           check=True, capture_output=True, text=True, timeout=timeout)
        return r.stdout

    def start(self):
        self.stop()
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} is taken by another server")
        if self.base.exists():
            shutil.rmtree(self.base)
        (self.base / "log").mkdir(parents=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            "loopback_users = none\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "advanced.config").write_text("[].\n")
        (self.base / ".erlang.cookie").write_text(f"scalp-test-{self.port}")
        (self.base / ".erlang.cookie").chmod(0o400)
        t0 = time.monotonic()
        # Our own epmd, started here so that stop() can end it (one the node starts by itself
        # outlives it as a daemon named only "epmd -daemon").
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1", "-daemon"], check=True)
        self.proc = subprocess.Popen(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=self._env(),
                                     stdout=open(self.base / "stdout.log", "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for(self.port, "rabbitmq-server", timeout=120)
        self.ctl("await_startup", timeout=120)
        self.startup_s = time.monotonic() - t0
        return self

    def counters(self):
        """The broker's own global counters (rabbit_global_counters, since 3.9) for AMQP 0-9-1,
        summed over queue types: messages_received_total (publishes), messages_routed_total,
        messages_unroutable_dropped_total, messages_delivered_total (to consumers and Basic.Get),
        messages_acknowledged_total, messages_get_empty_total, … as a dict of ints."""
        script = ("maps:foreach(fun(Labels, Counters) -> "
                  "case lists:member({protocol, amqp091}, Labels) of true -> "
                  "maps:foreach(fun(K, V) -> io:format(\"~s ~b~n\", [K, V]) end, Counters); "
                  "false -> ok end end, rabbit_global_counters:overview()).")
        out = {}
        for line in self.ctl("eval", script).splitlines():
            k, _, v = line.partition(" ")
            if v.isdigit():
                out[k] = out.get(k, 0) + int(v)
        return out

    def queues(self):
        """{queue name: (messages ready, consumers)}."""
        out = {}
        for line in self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                             "consumers").splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                out[parts[0]] = (int(parts[1]), int(parts[2]))
        return out

    def stop(self):
        pid_file = self.base / "rabbitmq.pid"
        proc = getattr(self, "proc", None)
        if pid_file.exists() or proc is not None:
            subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, "shutdown"], env=self._env(),
                           capture_output=True, timeout=120)
        if proc is not None:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
            self.proc = None
        # A node left by an earlier run (its rabbitmqctl could not reach it): by its data path.
        subprocess.run(["pkill", "-9", "-f", f"-mnesia dir \"{self.base}/"], capture_output=True)
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], capture_output=True)


class Memcached:
    """Two memcached processes (Debian's memcached): one on TCP 127.0.0.1:port, one on a Unix
    socket in the scratch directory (memcached's -s turns TCP off, so one process cannot do
    both). Each keeps its own `stats`."""

    def __init__(self, base=None, port=11211):
        self.base = pathlib.Path(base or BASE / f"memcached-{port}")
        self.port = port
        self.socket = self.base / "memcached.sock"
        self.procs = []
        self.startup_s = None

    def start(self):
        self.stop()
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} is taken by another server")
        if self.base.exists():
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True)
        shutil.chown(self.base, "memcache", "memcache")
        t0 = time.monotonic()
        common = ["memcached", "-u", "memcache", "-m", "64", "-c", "256", "-t", "2"]
        for where in (["-l", "127.0.0.1", "-p", str(self.port), "-U", "0"], ["-s", str(self.socket), "-a", "0770"]):
            self.procs.append(subprocess.Popen(common + where, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True))
        (self.base / "pids").write_text(" ".join(str(p.pid) for p in self.procs))
        wait_for(self.port, "memcached")
        wait_for(self.socket, "memcached")
        self.startup_s = time.monotonic() - t0
        return self

    def _ask(self, unix, command):
        family = socket.AF_UNIX if unix else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.socket) if unix else ("127.0.0.1", self.port))
            s.sendall(command)
            data = b""
            while not data.endswith(b"END\r\n"):
                more = s.recv(65536)
                if not more:
                    break
                data += more
        return data

    def stats(self, unix=False):
        """`stats` of the TCP (or Unix socket) server as a dict of ints: cmd_get, get_hits,
        get_misses, cmd_set, delete_hits, delete_misses, cmd_touch, curr_connections, …"""
        out = {}
        for line in self._ask(unix, b"stats\r\n").decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
                out[parts[1]] = int(parts[2])
        return out

    def stop(self):
        procs, self.procs = self.procs, []
        pids = self.base / "pids"
        if not procs and pids.exists():
            # Left by an earlier run of this directory.
            for pid in pids.read_text().split():
                try:
                    # Only if the pid is still a memcached (pids are reused).
                    if pathlib.Path(f"/proc/{pid}/comm").read_text().strip() == "memcached":
                        os.kill(int(pid), 15)
                except (OSError, ValueError):
                    pass
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        if pids.exists():
            pids.unlink()
WORKLOADS = pathlib.Path(__file__).resolve().parent / "workloads"
# uWSGI from PyPI lands beside the interpreter of the tests' virtualenv.
UWSGI = shutil.which("uwsgi", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("uwsgi")
UWSGI_REQUEST_LOG = "%(method) %(uri) %(status) %(cl) %(hsize) %(rsize) %(size) %(pktsize) %(pid)"
NGINX_LOG = ("$request_method $request_uri $status $request_length $bytes_sent $body_bytes_sent "
             "$upstream_response_length $connection $connection_requests")


def app_env(db):
    """The environment that points wsgi_app at a MariaDB or Postgres of this module."""
    kind = "postgresql" if isinstance(db, Postgres) else "mysql"
    return {**os.environ, "SCALP_APP_DB": kind, "SCALP_APP_DB_PORT": str(db.port)}


def prepare_app_database(db):
    """Creates wsgi_app's table, once, before any server of the app starts."""
    subprocess.run([sys.executable, "-c", "import wsgi_app; wsgi_app.prepare_database()"], cwd=WORKLOADS,
                   env=app_env(db), check=True)


class _Server:
    """A server process of ours, in its own session, stopped with SIGTERM."""

    def _spawn(self, cmd, env=None):
        out = open(self.base / "stdout.log", "ab")
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        out.close()
        return proc

    def _fresh_base(self, ports=()):
        for port in ports:
            if not port_free(port):
                raise RuntimeError(f"port {port} is taken by another server")
        if self.base.exists():
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True)

    def _wait(self, path_or_port, what, proc=None):
        proc = proc or self.proc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (self.base / "stdout.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{what} exited ({proc.returncode}):\n{log}")
            try:
                wait_for(path_or_port, what, timeout=0.2)
                return
            except RuntimeError:
                pass
        raise RuntimeError(f"{what} did not start")

    @staticmethod
    def _terminate(proc, sig=15):
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _uwsgi_cmd(base, socket_args, workers, wsgi_file=WORKLOADS / "wsgi_app.py"):
    cmd = [UWSGI, *socket_args, "--master", "--die-on-term", "--need-app", "--strict",
           "--processes", str(workers), "--lazy-apps",  # each worker opens its own DB connection
           "--wsgi-file", str(wsgi_file), "--callable", "application",
           "--pidfile", str(base / "uwsgi.pid"), "--logger", f"file:{base / 'uwsgi.log'}",
           "--req-logger", f"file:{base / 'requests.log'}", "--logformat", UWSGI_REQUEST_LOG]
    if sys.prefix != sys.base_prefix:
        cmd += ["--virtualenv", sys.prefix]
    return cmd


def _wait_workers_ready(server):
    """The socket is bound before the workers load the app (--lazy-apps): wait until each has, so
    that their DB connections are open before any request is made."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = server.base / "uwsgi.log"
        if log.exists() and log.read_text(errors="replace").count("(default app)") >= server.workers:
            return
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"uwsgi workers did not load the app: {server.base / 'uwsgi.log'}")


def _read_uwsgi_log(path):
    rows = []
    for line in path.read_text().splitlines():
        f = line.split(" ")
        if len(f) != 9:
            continue
        method, uri, status, cl, hsize, rsize, size, pktsize, pid = f
        rows.append({"method": method, "uri": uri, "status": int(status), "content_length": int(cl or 0),
                     "header_bytes": int(hsize), "body_bytes": int(rsize), "response_bytes": int(size),
                     "packet_bytes": int(pktsize), "pid": int(pid)})
    return rows


class UwsgiHttp(_Server):
    """wsgi_app under uWSGI speaking HTTP itself (`http-socket`, as Placement and Keystone are often
    deployed): a master and `workers` single-threaded workers that accept on 127.0.0.1:port (no
    HTTP router process). Its request log (requests.log, UWSGI_REQUEST_LOG) is the ground truth."""

    def __init__(self, db, port=8080, workers=2, base=None):
        self.db, self.port, self.workers = db, port, workers
        self.base = pathlib.Path(base or BASE / f"uwsgi-http-{port}")
        self.proc = None

    def start(self):
        self._fresh_base([self.port])
        self.proc = self._spawn(_uwsgi_cmd(self.base, ["--http-socket", f"127.0.0.1:{self.port}"], self.workers),
                                app_env(self.db))
        self._wait(self.port, "uwsgi (http-socket)")
        _wait_workers_ready(self)
        return self

    def worker_pids(self):
        return [int(p) for p in subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                               text=True).stdout.split()]

    def requests(self):
        return _read_uwsgi_log(self.base / "requests.log")

    def stop(self):
        self._terminate(self.proc)


class UwsgiNginx(_Server):
    """wsgi_app under uWSGI speaking the uwsgi protocol on a Unix socket (base/app.sock), behind
    Debian's nginx (`uwsgi_pass unix:…`) listening on 127.0.0.1:port, as DevStack fronts its API
    services. Both keep a request log: nginx's access.log (NGINX_LOG) and uWSGI's requests.log."""

    def __init__(self, db, port=8081, workers=2, base=None):
        self.db, self.port, self.workers = db, port, workers
        self.base = pathlib.Path(base or BASE / f"uwsgi-nginx-{port}")
        self.socket = self.base / "app.sock"
        self.proc = self.nginx = None

    def start(self):
        self._fresh_base([self.port])
        self.proc = self._spawn(_uwsgi_cmd(self.base, ["--uwsgi-socket", str(self.socket), "--chmod-socket=666"],
                                           self.workers), app_env(self.db))
        self._wait(self.socket, "uwsgi (uwsgi-socket)")
        _wait_workers_ready(self)
        for d in ("body", "uwsgi", "proxy", "fastcgi", "scgi"):
            (self.base / "nginx" / d).mkdir(parents=True)
        conf = self.base / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {self.base / 'nginx.pid'};
error_log {self.base / 'error.log'} warn;
events {{ worker_connections 256; }}
http {{
    log_format scalp '{NGINX_LOG}';
    access_log {self.base / 'access.log'} scalp;
    client_body_temp_path {self.base / 'nginx/body'};
    uwsgi_temp_path {self.base / 'nginx/uwsgi'};
    proxy_temp_path {self.base / 'nginx/proxy'};
    fastcgi_temp_path {self.base / 'nginx/fastcgi'};
    scgi_temp_path {self.base / 'nginx/scgi'};
    client_max_body_size 4m;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            include /etc/nginx/uwsgi_params;
            uwsgi_pass unix:{self.socket};
        }}
    }}
}}
""")
        self.nginx = self._spawn(["nginx", "-p", str(self.base), "-e", str(self.base / "error.log"), "-c", str(conf)])
        self._wait(self.port, "nginx", self.nginx)
        return self

    def worker_pids(self):
        return [int(p) for p in subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                               text=True).stdout.split()]

    def requests(self):
        """uWSGI's request log."""
        return _read_uwsgi_log(self.base / "requests.log")

    def access_log(self):
        """nginx's access log."""
        rows = []
        for line in (self.base / "access.log").read_text().splitlines():
            method, uri, status, req_len, sent, body_sent, upstream_len, conn, conn_reqs = line.split(" ")
            rows.append({"method": method, "uri": uri, "status": int(status), "request_bytes": int(req_len),
                         "response_bytes": int(sent), "body_bytes": int(body_sent),
                         "upstream_bytes": None if upstream_len == "-" else int(upstream_len),
                         "connection": int(conn), "connection_requests": int(conn_reqs)})
        return rows

    def stop(self):
        self._terminate(self.nginx)
        self._terminate(self.proc)


class EventletHttp(_Server):
    """wsgi_app served by eventlet.wsgi (tests/workloads/eventlet_server.py): one process, one OS
    thread, a greenthread per connection, HTTP/1.1 keep-alive; `pool` DB connections shared by
    the greenthreads. Its access log (access.log) is eventlet's own."""

    def __init__(self, db, port=8090, pool=4, base=None):
        self.db, self.port, self.pool = db, port, pool
        self.base = pathlib.Path(base or BASE / f"eventlet-{port}")
        self.proc = None

    def start(self):
        self._fresh_base([self.port])
        env = {**app_env(self.db), "SCALP_APP_POOL": str(self.pool), "PYTHONWARNINGS": "ignore"}
        self.proc = self._spawn([sys.executable, str(WORKLOADS / "eventlet_server.py"), "--port", str(self.port),
                                 "--log", str(self.base / "access.log")], env)
        self._wait(self.port, "eventlet wsgi server")
        return self

    def requests(self):
        """(method, uri, status, response bytes) per access-log line: eventlet counts what it wrote for
        the final response, head and chunk framing included (not a 100 Continue)."""
        rows = []
        for line in (self.base / "access.log").read_text().splitlines():
            try:
                request_line = line.split('"')[1]
                status, body = line.split('"')[2].split()[:2]
            except (IndexError, ValueError):
                continue
            method, uri, _ = request_line.split(" ")
            rows.append({"method": method, "uri": uri, "status": int(status), "response_bytes": int(body)})
        return rows

    def stop(self):
        self._terminate(self.proc)


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


class GateService(_Server):
    """One service of tests/workloads/gate_app.py (catalog, orders or files) under uWSGI in
    http-socket mode, `workers` workers, on MariaDB and PostgreSQL servers of this module; the
    knobs file and blob directory are shared by the services of one stack."""

    def __init__(self, service, mariadb, postgres, knobs, files, port, workers=2, base=None):
        self.service, self.port, self.workers = service, port, workers
        self.env = {**os.environ, "SCALP_GATE_SERVICE": service, "SCALP_GATE_KNOBS": str(knobs),
                    "SCALP_GATE_FILES": str(files), "SCALP_GATE_MYSQL_PORT": str(mariadb.port),
                    "SCALP_GATE_POSTGRESQL_PORT": str(postgres.port)}
        self.base = pathlib.Path(base or BASE / f"gate-{service}-{port}")
        self.proc = None

    def prepare(self):
        """Creates and fills the services' tables and blobs (once per stack, before start)."""
        subprocess.run([sys.executable, "-c", "import gate_app; gate_app.prepare()"], cwd=WORKLOADS,
                       env={**self.env, "SCALP_GATE_SERVICE": "none"}, check=True)

    def start(self):
        self._fresh_base([self.port])
        cmd = _uwsgi_cmd(self.base, ["--http-socket", f"127.0.0.1:{self.port}"], self.workers,
                         WORKLOADS / "gate_app.py")
        self.proc = self._spawn(cmd + ["--procname-prefix-spaced", f"{self.service}:"], self.env)
        self._wait(self.port, f"uwsgi ({self.service})")
        _wait_workers_ready(self)
        return self

    def stop(self):
        self._terminate(self.proc)


def pick_port(preferred):
    """The preferred port if free, else the first free one of preferred+10000, +10001, …"""
    for port in [preferred, *range(preferred + 10000, preferred + 10020)]:
        if port_free(port):
            return port
    raise RuntimeError(f"no free port near {preferred}")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "start"
    servers = [MariaDB(), Postgres(), RabbitMQ(), Memcached()]
    for s in servers:
        s.start() if what == "start" else s.stop()
    print(what, "ok")
