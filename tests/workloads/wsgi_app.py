"""A small WSGI application for the HTTP tests, served by uWSGI (http-socket, or uwsgi-socket
behind nginx) and by eventlet's wsgi server. Every route makes an exact, known number of SQL
statements per request (SQL_STATEMENTS), through PyMySQL (MariaDB) or psycopg (PostgreSQL), on
connections opened when the application loads — never during a request — in autocommit mode, so
that no driver-made statement (BEGIN, SET, COMMIT) lands inside a request.

Configuration (environment):
    SCALP_APP_DB        mysql | postgresql | none
    SCALP_APP_DB_PORT   the server's TCP port on 127.0.0.1 (or SCALP_APP_DB_SOCKET: a Unix socket
                        path for MariaDB, a directory for PostgreSQL)
    SCALP_APP_POOL      connections per process (eventlet serves requests concurrently; default 1)

Routes (ROUTES: method, route template, what it does):
    POST /items               JSON {"name"} → 201 {"id"}; 1 INSERT
    GET  /items/{uuid}        3 SELECTs → 200 JSON, or 404 when the id is unknown
    HEAD /items/{uuid}        the same, without a body
    POST /upload              reads the whole body (1 MiB in the tests) → 200 {"bytes"}; 1 INSERT
    GET  /stream              1 SELECT, then STREAM_PIECES pieces from a generator, no Content-Length
    GET  /boom                1 SELECT, then raises → 500 (from the FaultWrapper middleware, as
                              OpenStack's services turn exceptions into 500s)
    anything else             404, no SQL
"""
import atexit
import contextlib
import json
import os
import queue
import re
import uuid

USER, PASSWORD, DATABASE = "scalp", "scalp-test", "scalp"
STREAM_PIECES, STREAM_PIECE = 40, b"x" * 1000 + b"\n"

# Statements per request of each (method, route template, status).
SQL_STATEMENTS = {
    ("POST", "/items", 201): 1,
    ("GET", "/items/{id}", 200): 3,
    ("GET", "/items/{id}", 404): 3,
    ("HEAD", "/items/{id}", 200): 3,
    ("HEAD", "/items/{id}", 404): 3,
    ("POST", "/upload", 200): 1,
    ("GET", "/stream", 200): 1,
    ("GET", "/boom", 500): 1,
}


def sql_statements(method, route, status):
    """Statements a request makes (0 for the 404s of unknown paths)."""
    return SQL_STATEMENTS.get((method, route, status), 0)


SCHEMA = ("CREATE TABLE IF NOT EXISTS scalp_http_items "
          "(id VARCHAR(36) PRIMARY KEY, name VARCHAR(200) NOT NULL, size INTEGER NOT NULL)")


def connect():
    kind = os.environ.get("SCALP_APP_DB", "none")
    port = int(os.environ.get("SCALP_APP_DB_PORT", "0") or 0)
    sock = os.environ.get("SCALP_APP_DB_SOCKET")
    if kind == "mysql":
        import pymysql
        where = {"unix_socket": sock} if sock else {"host": "127.0.0.1", "port": port}
        return pymysql.connect(user=USER, password=PASSWORD, database=DATABASE, autocommit=True, **where)
    if kind == "postgresql":
        import psycopg
        return psycopg.connect(host=sock or "127.0.0.1", port=port, user=USER, password=PASSWORD,
                               dbname=DATABASE, autocommit=True)
    return None


def prepare_database():
    """Creates the table (run once, before the servers start)."""
    conn = connect()
    if conn is not None:
        execute(conn, SCHEMA)
        conn.close()


def execute(conn, sql, args=()):
    """One statement; returns its rows. PyMySQL and psycopg both take %s placeholders."""
    if hasattr(conn, "cursor") and not hasattr(conn, "pgconn"):
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    cur = conn.execute(sql, args)
    return cur.fetchall() if cur.description else []


class Pool:
    """Connections opened at load time, lent one per request."""

    def __init__(self, size):
        self.free = queue.Queue()
        self.all = [connect() for _ in range(size)]
        for conn in self.all:
            self.free.put(conn)
        # Closed before the interpreter tears down (PyMySQL's finalizer fails late in shutdown).
        atexit.register(self.close)

    def close(self):
        for conn in self.all:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 — the server may be gone already
                    pass

    @contextlib.contextmanager
    def lend(self):
        """A connection for one request (greenthreads hold theirs across their own yields)."""
        conn = self.free.get()
        try:
            yield conn
        finally:
            self.free.put(conn)


POOL = Pool(int(os.environ.get("SCALP_APP_POOL", "1")))
UUID = re.compile(r"^/items/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


def reply(start_response, status, doc, head=False):
    body = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [] if head else [body]


def read_body(environ):
    stream, data = environ["wsgi.input"], b""
    if not environ.get("CONTENT_LENGTH") and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        # A chunked request body (eventlet decodes it): read to its end.
        while True:
            piece = stream.read(65536)
            if not piece:
                return data
            data += piece
    length = int(environ.get("CONTENT_LENGTH") or 0)
    while len(data) < length:
        piece = stream.read(min(65536, length - len(data)))
        if not piece:
            break
        data += piece
    return data


def routes(environ, start_response):
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    m = UUID.match(path)
    if m and method in ("GET", "HEAD"):
        with POOL.lend() as conn:
            row = execute(conn, "SELECT id, name FROM scalp_http_items WHERE id = %s", (m.group(1),))
            count = execute(conn, "SELECT COUNT(*) FROM scalp_http_items")[0][0]
            near = execute(conn, "SELECT name FROM scalp_http_items WHERE id <> %s ORDER BY id LIMIT 3",
                           (m.group(1),))
        if not row:
            return reply(start_response, "404 Not Found", {"error": "no such item"}, method == "HEAD")
        doc = {"id": row[0][0], "name": row[0][1], "of": count, "near": [n[0] for n in near]}
        return reply(start_response, "200 OK", doc, method == "HEAD")
    if path == "/items" and method == "POST":
        name = json.loads(read_body(environ) or b"{}").get("name", "")
        new = str(uuid.uuid4())
        with POOL.lend() as conn:
            execute(conn, "INSERT INTO scalp_http_items (id, name, size) VALUES (%s, %s, 0)", (new, name))
        return reply(start_response, "201 Created", {"id": new})
    if path == "/upload" and method == "POST":
        data = read_body(environ)
        with POOL.lend() as conn:
            execute(conn, "INSERT INTO scalp_http_items (id, name, size) VALUES (%s, %s, %s)",
                    (str(uuid.uuid4()), "upload", len(data)))
        return reply(start_response, "200 OK", {"bytes": len(data)})
    if path == "/stream" and method == "GET":
        with POOL.lend() as conn:
            execute(conn, "SELECT COUNT(*) FROM scalp_http_items")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (STREAM_PIECE for _ in range(STREAM_PIECES))
    if path == "/boom" and method == "GET":
        with POOL.lend() as conn:
            execute(conn, "SELECT 1")
        raise RuntimeError("boom")
    return reply(start_response, "404 Not Found", {"error": "no such route"})


def application(environ, start_response):
    """FaultWrapper: an exception becomes a 500 with a JSON body."""
    try:
        return routes(environ, start_response)
    except Exception as e:  # noqa: BLE001 — the point of a fault wrapper
        body = json.dumps({"error": type(e).__name__}).encode()
        start_response("500 Internal Server Error",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
