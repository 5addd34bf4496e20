"""Three small services for the CI-gate tests (tests/test_gate.py, `cargo xtask bench gate`), one
WSGI application each, served by uWSGI like OpenStack's APIs. SCALP_GATE_SERVICE picks which:

    catalog  MariaDB (PyMySQL). Ten routes:
             GET  /products                      2 SELECTs (a page, a count)
             GET  /products/{id}                 2 SELECTs (the product, its stock)
             GET  /products/{id}/reviews         1 SELECT
             POST /products/{id}/reviews         1 INSERT
             GET  /categories/{id}               1 SELECT (the category's name)
             GET  /categories/{id}/products      1 SELECT, then 1 SELECT per listed product that
                                                 is in stock, up to 3 (an N+1: 1 to 4 statements)
             GET  /search?q=…                    1 SELECT
             GET  /stock/{id}                    1 SELECT
             PUT  /stock/{id}                    1 UPDATE
             GET  /health                        SELECT 1
    orders   PostgreSQL (psycopg, server-side prepared statements after 5 uses, as psycopg does).
             POST  /orders                       BEGIN, INSERT … RETURNING, 1 to 3 INSERTs, COMMIT
             GET   /orders/{id}                  2 SELECTs (the order, its items)
             GET   /orders?customer=…            1 SELECT
             PATCH /orders/{id}                  1 UPDATE
             GET   /customers/{id}               1 SELECT
    files    MariaDB for metadata, blobs on disk (SCALP_GATE_FILES, a directory).
             PUT  /blobs/{id}                    write a temporary file, fsync, rename; 1 INSERT … ON
                                                 DUPLICATE KEY UPDATE
             GET  /blobs/{id}                    1 SELECT, read the file
             GET  /blobs/{id}/meta               1 SELECT
             GET  /blobs                         1 SELECT
             POST /journal                       append a record to the worker's journal, fsync

Regressions are injected by knobs, a JSON file (SCALP_GATE_KNOBS) the app re-reads when its
modification time changes (one stat per request, always made):

    {"extra_select": true}   catalog: GET /products/{id} also reads its category's name (the
                             statement GET /categories/{id} makes): one more SELECT per request on
                             one route of ten
    {"new_query": P}         orders: GET /orders/{id} also counts the order's audit records with a
                             statement no route makes otherwise, on a fraction P of its requests
    {"extra_fsync": P}       files: after a fraction P of its fsyncs (every tenth for P = 0.1,
                             counted per worker), fsync the directory too: 10 % more fsyncs

Connections are opened when a worker loads the app, in autocommit mode: no driver statement lands
inside a request except those the routes make.
"""
import json
import os
import random
import re

USER, PASSWORD, DATABASE = "scalp", "scalp-test", "scalp"
SERVICE = os.environ.get("SCALP_GATE_SERVICE", "catalog")
KNOBS = os.environ.get("SCALP_GATE_KNOBS", "")
FILES = os.environ.get("SCALP_GATE_FILES", "")
PRODUCTS, CATEGORIES, CUSTOMERS, ORDERS, BLOBS = 200, 10, 50, 100, 100
BLOB = b"b" * 8192

SCHEMA = {
    "mysql": [
        "CREATE TABLE IF NOT EXISTS gate_categories (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS gate_products (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, "
        "category_id INTEGER NOT NULL, price INTEGER NOT NULL, KEY (category_id))",
        "CREATE TABLE IF NOT EXISTS gate_stock (product_id INTEGER PRIMARY KEY, qty INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS gate_reviews (id INTEGER AUTO_INCREMENT PRIMARY KEY, "
        "product_id INTEGER NOT NULL, stars INTEGER NOT NULL, body VARCHAR(200), KEY (product_id))",
        "CREATE TABLE IF NOT EXISTS gate_blobs (id INTEGER PRIMARY KEY, size INTEGER NOT NULL, "
        "path VARCHAR(200) NOT NULL)",
    ],
    "postgresql": [
        "CREATE TABLE IF NOT EXISTS gate_customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS gate_orders (id SERIAL PRIMARY KEY, customer_id INTEGER NOT NULL, "
        "status TEXT NOT NULL, total INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS gate_orders_customer ON gate_orders (customer_id)",
        "CREATE TABLE IF NOT EXISTS gate_order_items (order_id INTEGER NOT NULL, product_id INTEGER NOT NULL, "
        "qty INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS gate_order_items_order ON gate_order_items (order_id)",
        "CREATE TABLE IF NOT EXISTS gate_audit (order_id INTEGER NOT NULL, what TEXT NOT NULL)",
    ],
}


def connect(kind):
    """A connection to the tests' MariaDB (kind "mysql") or PostgreSQL, from the environment."""
    port = int(os.environ.get(f"SCALP_GATE_{kind.upper()}_PORT", "0") or 0)
    if kind == "mysql":
        import pymysql
        return pymysql.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, database=DATABASE,
                               autocommit=True)
    import psycopg
    return psycopg.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname=DATABASE,
                           autocommit=True)


def execute(conn, sql, args=()):
    """One statement; returns its rows. PyMySQL and psycopg both take %s placeholders."""
    if not hasattr(conn, "pgconn"):
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    cur = conn.execute(sql, args)
    return cur.fetchall() if cur.description else []


def prepare():
    """Creates and fills the tables and the blob directory (once, before the services start)."""
    my = connect("mysql")
    for sql in SCHEMA["mysql"]:
        execute(my, sql)
    for table in ("gate_categories", "gate_products", "gate_stock", "gate_reviews", "gate_blobs"):
        execute(my, f"DELETE FROM {table}")
    for c in range(1, CATEGORIES + 1):
        execute(my, "INSERT INTO gate_categories VALUES (%s, %s)", (c, f"category {c}"))
    for p in range(1, PRODUCTS + 1):
        execute(my, "INSERT INTO gate_products VALUES (%s, %s, %s, %s)", (p, f"product {p}", 1 + p % CATEGORIES, p))
        # Every other product is in stock: the N+1 route's statement count depends on the data.
        execute(my, "INSERT INTO gate_stock VALUES (%s, %s)", (p, 10 * (p % 2)))
    os.makedirs(FILES, exist_ok=True)
    for b in range(1, BLOBS + 1):
        path = os.path.join(FILES, f"blob-{b}")
        with open(path, "wb") as f:
            f.write(BLOB)
        execute(my, "INSERT INTO gate_blobs VALUES (%s, %s, %s)", (b, len(BLOB), path))
    my.close()
    pg = connect("postgresql")
    for sql in SCHEMA["postgresql"]:
        execute(pg, sql)
    execute(pg, "TRUNCATE gate_customers, gate_orders, gate_order_items, gate_audit RESTART IDENTITY")
    for c in range(1, CUSTOMERS + 1):
        execute(pg, "INSERT INTO gate_customers VALUES (%s, %s)", (c, f"customer {c}"))
    for o in range(1, ORDERS + 1):
        execute(pg, "INSERT INTO gate_orders (customer_id, status, total) VALUES (%s, 'new', %s)",
                (1 + o % CUSTOMERS, o))
        execute(pg, "INSERT INTO gate_order_items VALUES (%s, %s, 1)", (o, o))
    pg.close()


class Knobs:
    """The regression knobs, re-read when the file changes."""

    def __init__(self, path):
        self.path, self.mtime, self.values = path, None, {}

    def get(self, name, default=None):
        if self.path:
            try:
                mtime = os.stat(self.path).st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime != self.mtime:
                self.mtime = mtime
                try:
                    with open(self.path) as f:
                        self.values = json.load(f)
                except (FileNotFoundError, ValueError):
                    self.values = {}
        return self.values.get(name, default)


KNOB = Knobs(KNOBS)
SERVICES = ("catalog", "orders", "files")
DB = connect("postgresql" if SERVICE == "orders" else "mysql") if SERVICE in SERVICES else None
ID = re.compile(r"^/(\w+)/(\d+)(/\w+)?$")


def reply(start_response, status, doc):
    body = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def read_body(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""


def catalog(method, path, query, body):
    m = ID.match(path)
    kind, ident, sub = (m.group(1), int(m.group(2)), m.group(3)) if m else (None, None, None)
    if path == "/products" and method == "GET":
        page = execute(DB, "SELECT id, name, price FROM gate_products ORDER BY id LIMIT 20")
        count = execute(DB, "SELECT COUNT(*) FROM gate_products")[0][0]
        return "200 OK", {"products": [r[0] for r in page], "of": count}
    if kind == "products" and sub is None and method == "GET":
        row = execute(DB, "SELECT id, name, category_id, price FROM gate_products WHERE id = %s", (ident,))
        stock = execute(DB, "SELECT qty FROM gate_stock WHERE product_id = %s", (ident,))
        doc = {"id": ident, "name": row[0][1] if row else None, "qty": stock[0][0] if stock else 0}
        if KNOB.get("extra_select") and row:
            doc["category"] = execute(DB, "SELECT name FROM gate_categories WHERE id = %s", (row[0][2],))[0][0]
        return "200 OK", doc
    if kind == "products" and sub == "/reviews" and method == "GET":
        rows = execute(DB, "SELECT id, stars FROM gate_reviews WHERE product_id = %s ORDER BY id DESC LIMIT 10",
                       (ident,))
        return "200 OK", {"reviews": [r[0] for r in rows]}
    if kind == "products" and sub == "/reviews" and method == "POST":
        doc = json.loads(body or b"{}")
        execute(DB, "INSERT INTO gate_reviews (product_id, stars, body) VALUES (%s, %s, %s)",
                (ident, int(doc.get("stars", 3)), str(doc.get("body", ""))[:200]))
        return "201 Created", {}
    if kind == "categories" and sub is None and method == "GET":
        rows = execute(DB, "SELECT name FROM gate_categories WHERE id = %s", (ident,))
        return ("200 OK", {"name": rows[0][0]}) if rows else ("404 Not Found", {})
    if kind == "categories" and sub == "/products" and method == "GET":
        rows = execute(DB, "SELECT id, name FROM gate_products WHERE category_id = %s ORDER BY id LIMIT 6",
                       (ident,))
        listed = []
        for pid, _ in rows:
            if len(listed) == 3:
                break
            if pid % 2:  # in stock (see prepare): its quantity is looked up, one query each
                listed.append(execute(DB, "SELECT qty FROM gate_stock WHERE product_id = %s", (pid,))[0][0])
        return "200 OK", {"products": [r[0] for r in rows], "stock": listed}
    if path == "/search" and method == "GET":
        q = query.partition("q=")[2] or "1"
        rows = execute(DB, "SELECT id, name FROM gate_products WHERE name LIKE %s ORDER BY id LIMIT 10",
                       (f"%{q}%",))
        return "200 OK", {"found": [r[0] for r in rows]}
    if kind == "stock" and sub is None and method == "GET":
        rows = execute(DB, "SELECT qty FROM gate_stock WHERE product_id = %s", (ident,))
        return "200 OK", {"qty": rows[0][0] if rows else 0}
    if kind == "stock" and sub is None and method == "PUT":
        delta = int(json.loads(body or b"{}").get("delta", 0))
        execute(DB, "UPDATE gate_stock SET qty = qty + %s WHERE product_id = %s", (delta, ident))
        return "200 OK", {}
    if path == "/health" and method == "GET":
        execute(DB, "SELECT 1")
        return "200 OK", {"ok": True}
    return "404 Not Found", {}


def orders(method, path, query, body):
    m = ID.match(path)
    kind, ident, sub = (m.group(1), int(m.group(2)), m.group(3)) if m else (None, None, None)
    if path == "/orders" and method == "POST":
        doc = json.loads(body or b"{}")
        items = doc.get("items", [1])
        with DB.transaction():
            oid = execute(DB, "INSERT INTO gate_orders (customer_id, status, total) VALUES (%s, 'new', %s) "
                          "RETURNING id", (int(doc.get("customer", 1)), len(items)))[0][0]
            for product in items:
                execute(DB, "INSERT INTO gate_order_items (order_id, product_id, qty) VALUES (%s, %s, 1)",
                        (oid, int(product)))
        return "201 Created", {"id": oid}
    if path == "/orders" and method == "GET":
        customer = int(query.partition("customer=")[2] or 1)
        rows = execute(DB, "SELECT id, status, total FROM gate_orders WHERE customer_id = %s ORDER BY id DESC "
                       "LIMIT 10", (customer,))
        return "200 OK", {"orders": [r[0] for r in rows]}
    if kind == "orders" and sub is None and method == "GET":
        row = execute(DB, "SELECT id, customer_id, status, total FROM gate_orders WHERE id = %s", (ident,))
        items = execute(DB, "SELECT product_id, qty FROM gate_order_items WHERE order_id = %s", (ident,))
        doc = {"id": ident, "status": row[0][2] if row else None, "items": len(items)}
        p = KNOB.get("new_query", 0)
        if p and random.random() < p:
            doc["audit"] = execute(DB, "SELECT count(*) FROM gate_audit WHERE order_id = %s", (ident,))[0][0]
        return "200 OK", doc
    if kind == "orders" and sub is None and method == "PATCH":
        status = str(json.loads(body or b"{}").get("status", "seen"))[:20]
        execute(DB, "UPDATE gate_orders SET status = %s WHERE id = %s", (status, ident))
        return "200 OK", {}
    if kind == "customers" and sub is None and method == "GET":
        rows = execute(DB, "SELECT id, name FROM gate_customers WHERE id = %s", (ident,))
        return ("200 OK", {"name": rows[0][1]}) if rows else ("404 Not Found", {})
    return "404 Not Found", {}


EXTRA_FSYNC = [0.0]


def fsync(fd):
    """An fsync, and after the extra_fsync knob's fraction of them, one of the directory too."""
    os.fsync(fd)
    p = KNOB.get("extra_fsync", 0)
    EXTRA_FSYNC[0] += p
    if p and EXTRA_FSYNC[0] >= 1.0:
        EXTRA_FSYNC[0] -= 1.0
        d = os.open(FILES, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(d)
        finally:
            os.close(d)


def files(method, path, query, body):
    m = ID.match(path)
    kind, ident, sub = (m.group(1), int(m.group(2)), m.group(3)) if m else (None, None, None)
    if kind == "blobs" and sub is None and method == "PUT":
        final = os.path.join(FILES, f"blob-{ident}")
        tmp = f"{final}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        execute(DB, "INSERT INTO gate_blobs (id, size, path) VALUES (%s, %s, %s) "
                "ON DUPLICATE KEY UPDATE size = VALUES(size)", (ident, len(body), final))
        return "201 Created", {"bytes": len(body)}
    if kind == "blobs" and sub is None and method == "GET":
        rows = execute(DB, "SELECT size, path FROM gate_blobs WHERE id = %s", (ident,))
        if not rows:
            return "404 Not Found", {}
        with open(rows[0][1], "rb") as f:
            data = f.read()
        return "200 OK", {"bytes": len(data)}
    if kind == "blobs" and sub == "/meta" and method == "GET":
        rows = execute(DB, "SELECT size, path FROM gate_blobs WHERE id = %s", (ident,))
        return ("200 OK", {"size": rows[0][0]}) if rows else ("404 Not Found", {})
    if path == "/blobs" and method == "GET":
        rows = execute(DB, "SELECT id, size FROM gate_blobs ORDER BY id LIMIT 20")
        return "200 OK", {"blobs": [r[0] for r in rows]}
    if path == "/journal" and method == "POST":
        fd = os.open(os.path.join(FILES, f"journal-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, body + b"\n")
            fsync(fd)
        finally:
            os.close(fd)
        return "201 Created", {}
    return "404 Not Found", {}


ROUTES = {"catalog": catalog, "orders": orders, "files": files}.get(SERVICE)


def application(environ, start_response):
    KNOB.get("")  # the knobs' stat, on every request whatever the route
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    status, doc = ROUTES(method, path, environ.get("QUERY_STRING", ""), read_body(environ))
    return reply(start_response, status, doc)
