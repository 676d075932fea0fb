#!/usr/bin/env python3
"""Cross-implementation compatibility test: this project's glance-manage and
glance-api against upstream OpenStack Glance 33.0.0, on one database.

Run by tests/compat/shared_database.sh, with the python of the upstream venv
(benches/upstream/setup.sh: glance, PyMySQL, psycopg2, requests). Needs the
MariaDB and PostgreSQL servers of tests/db/servers.sh (GLANCE_TEST_MYSQL_URL,
GLANCE_TEST_POSTGRES_URL: a user who may create databases), mariadb-dump (or
mysqldump) and pg_dump.

Checks, each printed as `ok: NAME` when it passes, or `FAIL: NAME` with what was
seen; a failed check does not stop the others (only those that need its result).
Exit status 0 when all passed, 1 otherwise (the failed checks are listed last).

1. Schema, on MariaDB, PostgreSQL and SQLite:
   1a  a database made by our `glance-manage db_sync` is current for upstream's
       glance-manage (db_version, db_check, db_sync);
   1b  one made by upstream's db_sync is current for ours;
   1c  the two schemas are identical (mariadb-dump --no-data, pg_dump
       --schema-only, sqlite_master; only the normalisation a dump needs).
2. Shared catalogue and store, on MariaDB and PostgreSQL: upstream's glance-api
   (benches/upstream/glance_api.sh, which syncs the database) and ours on one
   database and one store directory. Direction A: the image is created and
   uploaded through upstream, then listed, shown, downloaded, patched and deleted
   through ours; direction B the other way round. After each write the other
   server must show the same document; the rows each implementation writes
   (images, image_properties, image_tags, image_locations) are compared, and a
   delete must be a soft delete that both servers honour.

Databases are named compat_<random>_ours / compat_<random>_up and dropped at the
end; every process started here is stopped at the end, also on failure.
"""

import argparse
import concurrent.futures
import contextlib
import difflib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

import psycopg2
import pymysql
import requests

HEAD = "2024_1_contract01"
SYNC_NOTHING = "Database is up to date. No migrations needed."
CHECK_CURRENT = "Database is up to date. No upgrades needed."
PG_CHECK = "Rolling upgrades are currently supported only for MySQL and Sqlite"
# What upstream's db_sync prints when it creates the schema.
SYNC_CREATED = [
    "Upgraded database to: 2024_1_expand01, current revision(s): 2024_1_expand01",
    "Database migration is up to date. No migration needed.",
    f"Upgraded database to: {HEAD}, current revision(s): {HEAD}",
    "Database is synced successfully.",
]
STORE_NAME = "file1"
PATCH_TYPE = "application/openstack-images-v2.1-json-patch"
HTTP_TIMEOUT = 120
# Both servers are on 127.0.0.1: no proxy from the environment.
HTTP = requests.Session()
HTTP.trust_env = False
START_TIMEOUT = 150
DB_NAME = re.compile(r"^compat_[a-z0-9_]+$")


# --- reporting ---------------------------------------------------------------


class Skip(Exception):
    """The rest of a section needs a check that failed (already reported)."""


class Report:
    def __init__(self):
        self.t0 = time.monotonic()
        self.passed = 0
        self.failed = []
        self.notes = []

    def _when(self):
        return f"[{time.monotonic() - self.t0:5.1f}s]"

    def ok(self, name, detail=None):
        self.passed += 1
        print(f"{self._when()} ok: {name}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, name, detail):
        self.failed.append(name)
        body = "\n".join("    " + line for line in str(detail).rstrip().splitlines())
        print(f"{self._when()} FAIL: {name}\n{body}", flush=True)

    def note(self, text):
        self.notes.append(text)
        body = "\n".join("    " + line for line in text.rstrip().splitlines()).lstrip()
        print(f"{self._when()} note: {body}", flush=True)

    def check(self, name, problems, detail=None):
        """Passes when `problems` (a list of strings) is empty."""
        if problems:
            self.fail(name, "\n".join(problems))
            return False
        self.ok(name, detail)
        return True

    def require(self, name, problems, detail=None):
        """Like check, but the rest of the section is skipped when it fails."""
        if not self.check(name, problems, detail):
            raise Skip(name)


@contextlib.contextmanager
def section(report, title):
    print(f"\n== {title}", flush=True)
    try:
        yield
    except Skip as e:
        print(f"   (the rest of this section is skipped: it needs '{e}')", flush=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception:  # an unexpected error fails the section, not the run
        report.fail(f"{title}: unexpected error", traceback.format_exc())


# --- commands ----------------------------------------------------------------


class Run:
    """A finished command: argv, exit status, stdout, stderr."""

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    def lines(self):
        return self.out.strip().splitlines()

    def seen(self):
        err = self.err.strip().splitlines()
        tail = "\n".join(err[-12:])
        return (
            f"command: {' '.join(self.argv)}\nexit status: {self.rc}\n"
            f"stdout:\n{self.out.rstrip() or '(empty)'}\n"
            f"stderr (last {min(len(err), 12)} of {len(err)} lines):\n{tail or '(empty)'}"
        )


_running = set()  # Popen of the commands under way (run() from several threads)
_running_lock = threading.Lock()
_stopping = threading.Event()


def run(argv, env=None, timeout=600):
    with _running_lock:
        if _stopping.is_set():
            raise RuntimeError("the test is stopping")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        _running.add(p)
    try:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += f"\n(killed: timed out after {timeout}s)"
            return Run(argv, -1, out, err)
        return Run(argv, p.returncode, out, err)
    finally:
        with _running_lock:
            _running.discard(p)


def kill_running():
    """Kills the commands under way and lets no new one start."""
    with _running_lock:
        _stopping.set()
        for p in _running:
            with contextlib.suppress(OSError):
                p.kill()


def expect_output(r, rc, lines):
    """Problems if `r` did not exit with `rc` printing exactly `lines` on stdout."""
    if r.rc == rc and r.lines() == lines:
        return []
    want = "\n".join(lines) or "(nothing)"
    return [f"expected exit status {rc} and stdout:\n{want}", f"seen:\n{r.seen()}"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- processes ---------------------------------------------------------------


def _proc_stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    return rest[0], int(rest[1])  # state, ppid


def alive(pid):
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def tree(pid):
    """pid and all its live descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st:
                children.setdefault(st[1], []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return [p for p in out if alive(p)]


def _signal(pid, sig):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_all(roots, timeout=15):
    """Stops each root process and its descendants: SIGTERM to the root (uWSGI's
    master stops its workers), then SIGKILL to whatever is left after `timeout`."""
    snapshot = {r: tree(r) for r in roots if alive(r)}
    for r in snapshot:
        _signal(r, signal.SIGTERM)
    pids = [p for ps in snapshot.values() for p in ps]
    for wait, then in ((timeout, signal.SIGKILL), (5, None)):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        left = [p for p in pids if alive(p)]
        if not left:
            return
        if then is None:
            print(f"warning: processes {left} did not stop", file=sys.stderr)
            return
        for p in left:
            _signal(p, then)


# --- database servers --------------------------------------------------------


def bool_int(v):
    return int(v) if isinstance(v, bool) else v


class Server:
    kind = label = ""
    # What compare_dumps may normalise in a dump before comparing (none by default).
    normalisation = "none"

    @staticmethod
    def normalise(text):
        return text

    def fetch(self, db, sql, params=()):
        """Rows of `sql` on database `db` as dicts (autocommit: the latest data)."""
        conn = self.connect(db)
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            conn.close()


class NetworkServer(Server):
    """A MariaDB or PostgreSQL server: SQLAlchemy URL of its admin database, the
    client tool that dumps a schema, and how it quotes a database name."""

    default_port = 0
    quote = '"'

    def __init__(self, url, dump_cmd):
        self.split = urllib.parse.urlsplit(url)
        self.admin_db = self.split.path.lstrip("/")
        self.dump_cmd = dump_cmd
        self.host = self.split.hostname
        self.port = self.split.port or self.default_port
        self.user = urllib.parse.unquote(self.split.username or "")
        self.password = urllib.parse.unquote(self.split.password or "")

    def url(self, db):
        return urllib.parse.urlunsplit(self.split._replace(path="/" + db))

    def _admin(self, sql):
        conn = self.connect(self.admin_db)
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    def create(self, db):
        assert DB_NAME.match(db)
        self._admin(f"CREATE DATABASE {self.quote}{db}{self.quote}")

    def drop(self, db):
        assert DB_NAME.match(db)
        self._admin(f"DROP DATABASE IF EXISTS {self.quote}{db}{self.quote}{self.drop_suffix}")

    drop_suffix = ""

    def _dump(self, argv, env):
        r = run([self.dump_cmd] + argv, env=dict(os.environ, **env), timeout=120)
        if r.rc != 0:
            raise RuntimeError(f"{self.dump_cmd} failed:\n{r.seen()}")
        return r.out


class MariaDB(NetworkServer):
    kind, label = "mariadb", "MariaDB"
    default_port, quote = 3306, "`"

    def connect(self, db):
        return pymysql.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, database=db, autocommit=True,
                               charset="utf8mb4")

    def dump(self, db):
        return self._dump(["--no-defaults", f"--host={self.host}", f"--port={self.port}",
                           f"--user={self.user}", "--no-data", "--skip-comments", "--compact", db],
                          {"MYSQL_PWD": self.password})


class Postgres(NetworkServer):
    kind, label = "postgresql", "PostgreSQL"
    default_port, drop_suffix = 5432, " WITH (FORCE)"
    normalisation = "none (pg_dump's \\restrict/\\unrestrict lines, random per run, dropped)"

    def connect(self, db):
        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=db)
        conn.autocommit = True
        return conn

    def dump(self, db):
        out = self._dump([f"--host={self.host}", f"--port={self.port}", f"--username={self.user}",
                          "--schema-only", "--no-owner", "--no-privileges", f"--dbname={db}"],
                         {"PGPASSWORD": self.password})
        # pg_dump (15.14+) fences the dump with \restrict / \unrestrict and a
        # random key that differs on every run.
        return "".join(line for line in out.splitlines(keepends=True)
                       if not re.match(r"^\\(un)?restrict ", line))


class SQLite(Server):
    kind, label = "sqlite", "SQLite"

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)

    def path(self, db):
        return os.path.join(self.dir, f"{db}.sqlite")

    def url(self, db):
        return f"sqlite:///{self.path(db)}"

    def connect(self, db):
        return sqlite3.connect(self.path(db))

    def create(self, db):
        pass  # db_sync creates the file

    def drop(self, db):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path(db))

    def dump(self, db):
        if not os.path.exists(self.path(db)):
            raise RuntimeError(f"{self.path(db)} does not exist")
        rows = self.fetch(db, "SELECT type, name, tbl_name, sql FROM sqlite_master "
                              "ORDER BY type, name")
        return "".join(f"-- {r['type']} {r['name']} ON {r['tbl_name']}\n{r['sql']};\n"
                       for r in rows)

    # SQLite keeps each CREATE statement's text as it was sent: SQLAlchemy's
    # (upstream) puts a space before every newline and breaks every table over
    # lines; the statement text is not part of the schema.
    normalisation = ("whitespace in the stored CREATE text: runs of blanks and "
                     "newlines collapsed to one space, none after '(' or before ')'")

    @staticmethod
    def normalise(text):
        out = []
        for stmt in re.split(r"(?m)^(?=-- )", text):
            s = re.sub(r"\s+", " ", stmt.split("\n", 1)[1] if "\n" in stmt else "")
            s = re.sub(r"\( ", "(", re.sub(r" \)", ")", s)).strip()
            out.append((stmt.split("\n", 1)[0] + "\n" + s + "\n") if stmt else "")
        return "".join(out)


# --- glance-manage -----------------------------------------------------------


class Manage:
    """Runs our or upstream's glance-manage on a database URL."""

    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}

    def __call__(self, url, command):
        conf = os.path.join(self.workdir, f"manage-{secrets.token_hex(4)}.conf")
        with open(conf, "w") as f:
            f.write(f"[database]\nconnection = {url}\n")
        return run([self.binary, "--config-file", conf, command], env=self.env, timeout=300)


# --- glance-api processes ----------------------------------------------------


class Processes:
    """Every long-running process started here, stopped by stop()."""

    def __init__(self):
        self.roots = []  # pids
        self.popens = []

    def add(self, pid, popen=None):
        self.roots.append(pid)
        if popen is not None:
            self.popens.append(popen)

    def forget(self, pid):
        """pid has exited and was reaped: its number may be reused."""
        self.roots = [p for p in self.roots if p != pid]

    def stop(self):
        stop_all(self.roots)
        for p in self.popens:
            with contextlib.suppress(Exception):
                p.wait(timeout=5)


def wait_healthy(base, proc, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready")
        try:
            r = HTTP.get(base + "/healthcheck", timeout=5)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{what}: {base}/healthcheck did not answer 200 in {timeout}s (last: {last})")


class UpstreamApi:
    """benches/upstream/glance_api.sh in the background: db_sync, then uWSGI."""

    def __init__(self, script, directory, db_url, store, procs):
        self.dir = directory
        self.port = free_port()
        env = dict(os.environ, GLANCE_API_DB_URL=db_url, GLANCE_API_STORE_DIR=store,
                   GLANCE_API_PROCESSES="1", GLANCE_API_TIMEOUT=str(START_TIMEOUT))
        env = {k: v for k, v in env.items() if not k.startswith("OS_")}
        self.popen = subprocess.Popen(
            [script, directory, str(self.port)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        procs.add(self.popen.pid, self.popen)
        self.procs = procs
        self.base = None

    def wait(self):
        try:
            out, err = self.popen.communicate(timeout=START_TIMEOUT + 120)
        except subprocess.TimeoutExpired:
            raise RuntimeError("glance_api.sh did not finish")
        self.procs.forget(self.popen.pid)
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(self.dir, "uwsgi.pid")) as f:
                self.procs.add(int(f.read().strip()))
        if self.popen.returncode != 0:
            raise RuntimeError(f"glance_api.sh failed (status {self.popen.returncode}):\n{err}")
        self.base = out.strip().splitlines()[-1]
        return self.base

    def sync_log(self):
        with open(os.path.join(self.dir, "db_sync.log")) as f:
            return f.read()

    def log_tail(self, n=40):
        with contextlib.suppress(OSError):
            with open(os.path.join(self.dir, "uwsgi.log")) as f:
                return "".join(f.readlines()[-n:])
        return ""


class OurApi:
    def __init__(self, binary, directory, db_url, store, procs):
        os.makedirs(directory, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(directory, "glance-api.log")
        conf = os.path.join(directory, "glance-api.conf")
        with open(conf, "w") as f:
            f.write(f"""[DEFAULT]
bind_host = 127.0.0.1
bind_port = {self.port}
enabled_backends = {STORE_NAME}:file
[glance_store]
default_backend = {STORE_NAME}
[{STORE_NAME}]
filesystem_store_datadir = {store}
[database]
connection = {db_url}
[paste_deploy]
flavor =
""")
        with open(self.log, "w") as log:
            self.popen = subprocess.Popen([binary, "--config-file", conf], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
        procs.add(self.popen.pid, self.popen)

    def wait(self):
        wait_healthy(self.base, self.popen, 60, "our glance-api")
        return self.base

    def log_tail(self, n=40):
        with open(self.log) as f:
            return "".join(f.readlines()[-n:])


# --- Image API ---------------------------------------------------------------


class Api:
    def __init__(self, name, base):
        self.name, self.base = name, base

    def req(self, method, path, **kw):
        return HTTP.request(method, self.base + path, timeout=HTTP_TIMEOUT, **kw)

    def create(self, body):
        return self.req("POST", "/v2/images", json=body)

    def upload(self, image_id, data):
        return self.req("PUT", f"/v2/images/{image_id}/file", data=data,
                        headers={"Content-Type": "application/octet-stream"})

    def show(self, image_id):
        return self.req("GET", f"/v2/images/{image_id}")

    def download(self, image_id):
        return self.req("GET", f"/v2/images/{image_id}/file")

    def patch(self, image_id, ops):
        return self.req("PATCH", f"/v2/images/{image_id}", data=json.dumps(ops),
                        headers={"Content-Type": PATCH_TYPE})

    def delete(self, image_id):
        return self.req("DELETE", f"/v2/images/{image_id}")

    def list(self, params=()):
        return self.req("GET", "/v2/images", params=list(params))


def poss(name):
    """ours -> ours', upstream -> upstream's"""
    return name + ("'" if name.endswith("s") else "'s")


def seen(r):
    body = r.text if len(r.text) <= 1500 else r.text[:1500] + "..."
    return f"{r.request.method} {r.url} -> {r.status_code} {r.reason}\n{body}"


def status_is(api, r, code, what):
    if r.status_code == code:
        return []
    return [f"{what} through {api.name}: expected HTTP {code}, got:\n{seen(r)}"]


def json_of(r):
    try:
        return r.json()
    except ValueError:
        return None


def doc_differences(up, ours):
    """Field-by-field differences between upstream's document and ours: every field
    upstream has, then those only ours has. Tags are a set (upstream's order follows
    the rows' creation time, which ties within a second)."""
    def norm(k, v):
        return sorted(v) if k == "tags" and isinstance(v, list) else v
    out = []
    for k in up:
        if k not in ours:
            out.append(f"{k}: upstream {json.dumps(up[k])}, ours has no such field")
        elif norm(k, up[k]) != norm(k, ours[k]):
            out.append(f"{k}: upstream {json.dumps(up[k])}, ours {json.dumps(ours[k])}")
    for k in ours:
        if k not in up:
            out.append(f"{k}: ours {json.dumps(ours[k])}, upstream has no such field")
    return out


# --- catalogue rows ----------------------------------------------------------

TIMESTAMPS = ("created_at", "updated_at", "deleted_at")


def row_view(row, drop):
    """A row without the columns in `drop`, timestamps reduced to set/null."""
    out = {}
    for k, v in row.items():
        if k in drop:
            continue
        out[k] = ("set" if v is not None else None) if k in TIMESTAMPS else bool_int(v)
    return out


def snapshot(server, db, image_id):
    q = lambda sql: server.fetch(db, sql, (image_id,))  # noqa: E731
    return {
        "images": q("SELECT * FROM images WHERE id = %s"),
        "image_properties": q("SELECT * FROM image_properties WHERE image_id = %s ORDER BY name, id"),
        "image_tags": q("SELECT * FROM image_tags WHERE image_id = %s ORDER BY value, deleted, id"),
        "image_locations": q("SELECT * FROM image_locations WHERE image_id = %s ORDER BY id"),
    }


# Columns that differ between two images by construction.
SNAPSHOT_DROP = {
    "images": {"id", "name", "checksum", "os_hash_value"},
    "image_properties": {"id", "image_id"},
    "image_tags": {"id", "image_id"},
    "image_locations": {"id", "image_id", "value"},
}


def snapshot_view(snap, live_deleted_at=True):
    out = {}
    for table, rows in snap.items():
        views = [row_view(r, SNAPSHOT_DROP[table]) for r in rows]
        if not live_deleted_at:
            for v in views:
                if v.get("deleted") == 0:
                    v.pop("deleted_at", None)
        out[table] = views
    return out


def rows_text(rows):
    return "\n".join(json.dumps(r, sort_keys=True, default=str) for r in rows) or "(no rows)"


# --- section 1: schema ---------------------------------------------------------


def compare_dumps(report, name, server, ours, up):
    if ours == up:
        report.ok(name, f"identical byte for byte; normalisation: {server.normalisation}")
        return
    n_ours, n_up = server.normalise(ours), server.normalise(up)
    if n_ours == n_up:
        differing = sorted({hdr for hdr, a, b in zip_statements(up, ours) if a != b})
        report.ok(name, f"identical after normalising {server.normalisation}")
        report.note(f"{server.label}: the raw dumps differ only in {server.normalisation.split(':')[0]}, "
                    f"in {len(differing)} statements: " + ", ".join(differing))
        return
    diff = "\n".join(difflib.unified_diff(
        n_up.splitlines(), n_ours.splitlines(),
        f"upstream db_sync ({server.label})", f"our db_sync ({server.label})", lineterm=""))
    report.fail(name, f"the schemas differ (normalisation: {server.normalisation}):\n{diff}")


def zip_statements(a, b):
    """(header, statement of a, statement of b) of two dumps split at '-- ' headers."""
    def split(text):
        return {m.group(1): m.group(0) for m in re.finditer(r"(?ms)^-- (.*?)$.*?(?=^-- |\Z)", text)}
    sa, sb = split(a), split(b)
    return [(h, sa.get(h), sb.get(h)) for h in sorted(set(sa) | set(sb))]


def upstream_on_ours(manage_up, url, kind):
    """Upstream's glance-manage, in order, on the database that ours created."""
    out = {"db_version": manage_up(url, "db_version"), "db_check": manage_up(url, "db_check")}
    out["db_sync"] = manage_up(url, "db_sync")
    return out


def judge_schema(report, server, res):
    """Section 1 checks of one backend from the results gathered in `res`."""
    L = server.label
    with section(report, f"1. schema on {L}"):
        # 1a: ours creates, upstream reads.
        report.require(f"[{L}] 1a our glance-manage db_sync creates the schema (prints what upstream's prints)",
                       expect_output(res["ours_sync"], 0, SYNC_CREATED))
        if "ours_dump_error" in res:
            report.fail(f"[{L}] 1a dump of the schema our db_sync made", res["ours_dump_error"])
        up = res["upstream_on_ours"]
        report.check(f"[{L}] 1a upstream db_version on our schema prints {HEAD}",
                     expect_output(up["db_version"], 0, [HEAD]))
        if server.kind == "postgresql":
            report.check(f"[{L}] 1a upstream db_check on our schema: exit 1, PostgreSQL not supported (as on its own)",
                         [] if up["db_check"].rc == 1 and PG_CHECK in up["db_check"].err
                         else [f"expected exit 1 and '{PG_CHECK}' on stderr", up["db_check"].seen()])
        else:
            report.check(f"[{L}] 1a upstream db_check on our schema: up to date, exit 0",
                         expect_output(up["db_check"], 0, [CHECK_CURRENT]))
        report.check(f"[{L}] 1a upstream db_sync on our schema: nothing to migrate, exit 0",
                     expect_output(up["db_sync"], 0, [SYNC_NOTHING]))

        # 1b: upstream creates, ours reads.
        report.require(f"[{L}] 1b upstream glance-manage db_sync creates the schema",
                       res["up_sync_problems"])
        if "up_dump_error" in res:
            report.fail(f"[{L}] 1b dump of the schema upstream's db_sync made", res["up_dump_error"])
        ours = res["ours_on_up"]
        report.check(f"[{L}] 1b our db_version on upstream's schema prints {HEAD}",
                     expect_output(ours["db_version"], 0, [HEAD]))
        if server.kind == "postgresql":
            # Upstream: sys.exit(message), so the message is on stderr and stdout is empty.
            ref, got = up["db_check"], ours["db_check"]
            problems = []
            if got.rc != ref.rc:
                problems.append(f"exit status: upstream {ref.rc}, ours {got.rc}")
            if got.out.strip() != ref.out.strip():
                problems.append(f"stdout: upstream {ref.out.strip()!r}, ours {got.out.strip()!r}")
            if PG_CHECK in ref.err and PG_CHECK not in got.err:
                problems.append(f"stderr: upstream prints '{PG_CHECK}' there, ours does not")
            if problems:
                problems.append(f"upstream:\n{ref.seen()}\nours:\n{got.seen()}")
            report.check(f"[{L}] 1b our db_check on PostgreSQL answers like upstream's "
                         f"(exit 1, '{PG_CHECK}' on stderr, nothing on stdout)", problems)
        else:
            report.check(f"[{L}] 1b our db_check on upstream's schema: up to date, exit 0",
                         expect_output(ours["db_check"], 0, [CHECK_CURRENT]))
        report.check(f"[{L}] 1b our db_sync on upstream's schema: nothing to migrate, exit 0",
                     expect_output(ours["db_sync"], 0, [SYNC_NOTHING]))

        # 1c
        if "ours_dump" in res and "up_dump" in res:
            compare_dumps(report, f"[{L}] 1c our schema and upstream's are identical",
                          server, res["ours_dump"], res["up_dump"])


# --- section 2: shared catalogue -------------------------------------------------


class Shared:
    """Both glance-apis on one database and one store directory."""

    def __init__(self, report, server, db, store, upstream, ours):
        self.report, self.server, self.db, self.store = report, server, db, store
        self.apis = {"upstream": upstream, "ours": ours}
        self.L = server.label
        self.snaps = {}  # (direction, stage) -> snapshot
        self.noted_locations = False

    def name(self, text):
        return f"[{self.L}] 2 {text}"

    def run(self):
        data = {"A": os.urandom(1024 * 1024 + 4099), "B": os.urandom(1024 * 1024 + 4099)}
        for direction, creator, editor in (("A", "upstream", "ours"), ("B", "ours", "upstream")):
            with section(self.report, f"2. shared catalogue on {self.L}, direction {direction}: "
                                      f"created and uploaded through {creator}, used through {editor}"):
                self.direction(direction, self.apis[creator], self.apis[editor], data[direction])
        with section(self.report, f"2. shared catalogue on {self.L}: rows written by ours equal upstream's"):
            self.compare_rows()

    def direction(self, d, creator, editor, data):
        rep, tag = self.report, secrets.token_hex(3)
        pre = f"{d}: {creator.name}→{editor.name}:"
        name = f"compat-{d.lower()}-{tag}"
        md5, sha512 = hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()

        # Create and upload through the creator.
        body = {"name": name, "disk_format": "raw", "container_format": "bare",
                "tags": ["alpha", "beta"], "compat_prop": "one"}
        r = creator.create(body)
        problems = status_is(creator, r, 201, "POST /v2/images")
        doc = json_of(r) or {}
        if not problems:
            problems = [f"{k}: sent {json.dumps(body[k])}, got {json.dumps(doc.get(k))}"
                        for k in body if doc.get(k) != body[k] and k != "tags"]
            if sorted(doc.get("tags", [])) != body["tags"]:
                problems.append(f"tags: sent {body['tags']}, got {doc.get('tags')}")
        rep.require(self.name(f"{pre} create through {creator.name} (tags, extra property)"), problems)
        image_id = doc["id"]
        r = creator.upload(image_id, data)
        rep.require(self.name(f"{pre} upload {len(data)} bytes through {creator.name}"),
                    status_is(creator, r, 204, "PUT /v2/images/ID/file"))
        # The data file and the row.
        problems = []
        path = os.path.join(self.store, image_id)
        try:
            with open(path, "rb") as f:
                if f.read() != data:
                    problems.append(f"{path} does not hold the uploaded bytes")
        except OSError as e:
            problems.append(f"no data file in the shared store: {e}")
        snap = snapshot(self.server, self.db, image_id)
        self.snaps[(d, "upload")] = snap
        img = snap["images"][0] if snap["images"] else {}
        # Upstream's upload sets virtual_size from the data's format (glance/location.py,
        # format_inspector): for raw data it is the size.
        want = {"status": "active", "size": len(data), "virtual_size": len(data), "checksum": md5,
                "os_hash_algo": "sha512", "os_hash_value": sha512}
        problems += [f"images.{k}: expected {v!r}, found {img.get(k)!r}" for k, v in want.items()
                     if img.get(k) != v]
        rep.check(self.name(f"{pre} the upload through {creator.name} is in the images row (status, size, "
                            f"virtual_size, checksum, os_hash_*) and the shared store"), problems)
        self.check_location(pre, creator, image_id, snap)

        # Listed by the editor, with the filters the catalogue queries.
        filters = [("name", name), ("tag", "alpha"), ("compat_prop", "one")]
        r = editor.list(filters)
        problems = status_is(editor, r, 200, "GET /v2/images")
        if not problems:
            ids = [i.get("id") for i in r.json().get("images", [])]
            if ids != [image_id]:
                problems.append(f"GET {r.url}: expected exactly [{image_id}], got {ids}")
            r_all = editor.list()
            if image_id not in [i.get("id") for i in (json_of(r_all) or {}).get("images", [])]:
                problems.append(f"GET {r_all.url} does not list {image_id}:\n{seen(r_all)}")
        rep.check(self.name(f"{pre} {editor.name} lists the image (name, tag and property filters)"), problems)
        self.check_lists(pre, filters)

        # Shown alike.
        r_up, r_ours = self.apis["upstream"].show(image_id), self.apis["ours"].show(image_id)
        problems = status_is(self.apis["upstream"], r_up, 200, "show") + \
            status_is(self.apis["ours"], r_ours, 200, "show")
        if not problems:
            diffs = doc_differences(r_up.json(), r_ours.json())
            if diffs:
                problems = [f"GET /v2/images/{image_id}, field by field (upstream's fields, then ours only):"] \
                    + ["  " + x for x in diffs]
        rep.check(self.name(f"{pre} both show the same document, every field upstream returns"), problems)
        if not problems and not self.noted_locations:
            self.noted_locations = True
            if not {k for k in ("locations", "direct_url") if k in r_up.json()}:
                rep.note(f"[{self.L}] upstream's image document has no 'locations' or 'direct_url' "
                         f"(show_multiple_locations and show_image_direct_url are off): not compared")

        # Downloaded by the editor.
        r = editor.download(image_id)
        problems = status_is(editor, r, 200, "GET /v2/images/ID/file")
        if not problems:
            if r.content != data:
                problems.append(f"the {len(r.content)} bytes downloaded are not the {len(data)} uploaded "
                                f"(md5 {hashlib.md5(r.content).hexdigest()}, expected {md5})")
            if r.headers.get("Content-MD5") != md5:
                problems.append(f"Content-MD5: expected {md5} (upstream sends it), got {r.headers.get('Content-MD5')!r}")
            if r.headers.get("Content-Type") != "application/octet-stream":
                problems.append(f"Content-Type: expected application/octet-stream, got {r.headers.get('Content-Type')!r}")
        rep.check(self.name(f"{pre} {editor.name} downloads the bytes {creator.name} stored (md5 {md5})"),
                  problems)

        # Patched by the editor; the creator shows each result.
        patches = [
            ("add a property, replace one, replace the tags, set min_ram",
             [{"op": "add", "path": "/compat_new", "value": "two"},
              {"op": "replace", "path": "/compat_prop", "value": "three"},
              {"op": "replace", "path": "/tags", "value": ["gamma", "delta", "alpha"]},
              {"op": "replace", "path": "/min_ram", "value": 512}],
             {"compat_new": "two", "compat_prop": "three", "min_ram": 512,
              "tags": ["alpha", "delta", "gamma"]}),
            ("remove a property",
             [{"op": "remove", "path": "/compat_new"}],
             {"compat_new": None}),
            ("add the removed property again",
             [{"op": "add", "path": "/compat_new", "value": "four"}],
             {"compat_new": "four"}),
        ]
        for what, ops, expect in patches:
            r = editor.patch(image_id, ops)
            problems = status_is(editor, r, 200, "PATCH /v2/images/ID")
            if not problems:
                got = r.json()
                for k, v in expect.items():
                    g = got.get(k)
                    if k == "tags" and isinstance(g, list):
                        g = sorted(g)
                    if g != v:
                        problems.append(f"{k}: expected {json.dumps(v)}, {poss(editor.name)} response has {json.dumps(g)}")
            rep.require(self.name(f"{pre} {editor.name} patches: {what}"), problems)
            written = r.json()
            problems = []
            for viewer in (creator, editor):
                rv = viewer.show(image_id)
                p = status_is(viewer, rv, 200, "show")
                if not p:
                    up_doc, ours_doc = (written, rv.json()) if editor.name == "upstream" else (rv.json(), written)
                    diffs = doc_differences(up_doc, ours_doc)
                    if diffs:
                        p = [f"{poss(viewer.name)} GET after {poss(editor.name)} PATCH differs from the PATCH response "
                             f"(upstream's document, then ours):"] + ["  " + x for x in diffs]
                problems += p
            rep.check(self.name(f"{pre} after that patch {creator.name} (and {editor.name}) show what "
                                f"{poss(editor.name)} PATCH returned"), problems)
        self.snaps[(d, "patch")] = snapshot(self.server, self.db, image_id)

        # Deleted by the editor.
        r = editor.delete(image_id)
        rep.require(self.name(f"{pre} {editor.name} deletes the image"),
                    status_is(editor, r, 204, "DELETE /v2/images/ID"))
        self.check_deleted(pre, image_id, name, editor)

    def check_location(self, pre, writer, image_id, snap):
        locs = snap["image_locations"]
        want = {"value": f"file://{self.store}/{image_id}", "meta_data": json.dumps({"store": STORE_NAME}),
                "status": "active", "deleted": 0, "deleted_at": None}
        problems = []
        if len(locs) != 1:
            problems.append(f"expected one image_locations row, found {len(locs)}:\n{rows_text(locs)}")
        else:
            row = {k: bool_int(v) for k, v in locs[0].items()}
            problems += [f"image_locations.{k}: expected {v!r}, found {row.get(k)!r}"
                         for k, v in want.items() if row.get(k) != v]
        rep_name = (f"{pre} the image_locations row {writer.name} writes for its upload: "
                    f"value file://<store>/<id>, meta_data exactly {want['meta_data']}, active, deleted 0")
        self.report.check(self.name(rep_name), problems)

    def check_lists(self, pre, params):
        up, ours = self.apis["upstream"], self.apis["ours"]
        r_up, r_ours = up.list(params), ours.list(params)
        problems = status_is(up, r_up, 200, "list") + status_is(ours, r_ours, 200, "list")
        if not problems:
            a, b = r_up.json(), r_ours.json()
            imgs_a, imgs_b = a.pop("images", []), b.pop("images", [])
            problems = ["  " + x for x in doc_differences(a, b)]
            if [i.get("id") for i in imgs_a] != [i.get("id") for i in imgs_b]:
                problems.append(f"  images: upstream {[i.get('id') for i in imgs_a]}, "
                                f"ours {[i.get('id') for i in imgs_b]}")
            else:
                for ia, ib in zip(imgs_a, imgs_b):
                    problems += [f"  images[{ia.get('id')}].{x}" for x in doc_differences(ia, ib)]
            if problems:
                query = urllib.parse.urlencode(params)
                problems = [f"GET /v2/images?{query}, field by field (upstream, then ours):"] + problems
        self.report.check(self.name(f"{pre} both answer the same list document (links included)"), problems)

    def check_deleted(self, pre, image_id, name, deleter):
        rep = self.report
        problems = []
        for api in self.apis.values():
            for params in ([("name", name)], []):
                r = api.list(params)
                p = status_is(api, r, 200, "list")
                if not p and image_id in [i.get("id") for i in r.json().get("images", [])]:
                    p = [f"{api.name} still lists it: GET {r.url}"]
                problems += p
            problems += status_is(api, api.show(image_id), 404, f"GET /v2/images/{image_id}")
            problems += status_is(api, api.download(image_id), 404, f"GET /v2/images/{image_id}/file")
        rep.check(self.name(f"{pre} after {poss(deleter.name)} delete: gone from both lists, 404 on show and "
                            f"download from both"), problems)

        snap = snapshot(self.server, self.db, image_id)
        self.snaps[(pre[0], "delete")] = snap
        problems = []
        if len(snap["images"]) != 1:
            problems.append(f"expected the images row to stay, found {len(snap['images'])} rows")
        else:
            img = snap["images"][0]
            if bool_int(img["deleted"]) != 1 or img["status"] != "deleted" or img["deleted_at"] is None:
                problems.append(f"images row: expected deleted=1, status 'deleted', deleted_at set; found "
                                f"deleted={img['deleted']!r}, status={img['status']!r}, "
                                f"deleted_at={img['deleted_at']!r}")
        for table in ("image_locations", "image_properties", "image_tags"):
            live = [r for r in snap[table] if bool_int(r["deleted"]) != 1]
            if live:
                problems.append(f"{table}: rows not soft-deleted:\n{rows_text(live)}")
        locs = [r for r in snap["image_locations"] if r.get("status") != "deleted"]
        if locs:
            problems.append(f"image_locations: status not 'deleted':\n{rows_text(locs)}")
        if os.path.exists(os.path.join(self.store, image_id)):
            problems.append(f"the data file {os.path.join(self.store, image_id)} is still in the store")
        rep.check(self.name(f"{pre} {poss(deleter.name)} delete is a soft delete (rows kept with deleted=1, "
                            f"status deleted; data file removed)"), problems)

        problems = []
        for api in (self.apis["ours"], self.apis["upstream"]):
            r = api.create({"id": image_id, "name": name + "-again", "disk_format": "raw",
                            "container_format": "bare"})
            problems += status_is(api, r, 409, f"POST /v2/images with the deleted image's id {image_id}")
        rep.check(self.name(f"{pre} both refuse (409) a new image with the deleted image's id"), problems)

    def compare_rows(self):
        """Rows of A (written by the one side) against B (by the other), stage by stage.
        An images column that already differed after the upload, and still holds the
        same two values, is reported once (at the upload), not again at each stage."""
        writers = {"upload": ("upstream", "ours"), "patch": ("ours", "upstream"),
                   "delete": ("ours", "upstream")}
        carried = {}  # images column -> (A's value, B's value) after the upload
        for stage, (wa, wb) in writers.items():
            a, b = self.snaps.get(("A", stage)), self.snaps.get(("B", stage))
            check = self.name(f"after {stage}: images, image_properties, image_tags, image_locations "
                              f"rows alike (A written by {wa}, B by {wb}; ids, names, hashes and "
                              f"timestamp values aside)")
            if a is None or b is None:
                self.report.fail(check, "not compared: a step before it failed")
                continue
            va, vb = snapshot_view(a), snapshot_view(b)
            la, lb = snapshot_view(a, live_deleted_at=False), snapshot_view(b, live_deleted_at=False)
            ia, ib = (va["images"] or [{}])[0], (vb["images"] or [{}])[0]
            if stage == "upload":
                carried = {k: (ia.get(k), ib.get(k)) for k in set(ia) | set(ib) if ia.get(k) != ib.get(k)}
                same_since = []
            else:
                same_since = sorted(k for k, v in carried.items() if (ia.get(k), ib.get(k)) == v)
                for k in same_since:
                    for view in (va, vb, la, lb):
                        for row in view["images"]:
                            row.pop(k, None)
            problems, tolerated = [], []
            for table in va:
                if va[table] == vb[table]:
                    continue
                diff = f"{table}:\n" + "\n".join(difflib.unified_diff(
                    rows_text(va[table]).splitlines(), rows_text(vb[table]).splitlines(),
                    f"A (by {wa})", f"B (by {wb})", lineterm=""))
                tolerable = table == "image_properties" and la[table] == lb[table]
                (tolerated if tolerable else problems).append(diff)
            details = []
            if same_since:
                details.append("images." + ", images.".join(same_since)
                               + (" still differs" if len(same_since) == 1 else " still differ")
                               + " as after the upload")
            if tolerated:
                details.append("apart from deleted_at of a re-added property, see the note")
            self.report.check(check, problems, "; ".join(details) or None)
            if tolerated:
                ours_side = "A" if wa == "ours" else "B"
                self.report.note(
                    f"[{self.L}] after {stage}: a property removed and then added again is live (deleted=0) "
                    f"with deleted_at cleared in the row ours wrote ({ours_side}), still set in upstream's "
                    f"(its _image_property_update sets deleted=False and leaves deleted_at; its `db purge` "
                    f"selects rows by deleted_at alone, so it would purge that live property): tolerated, "
                    f"ours is the safer one.\n" + "\n".join(tolerated))


# --- main ------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", required=True, help="directory with our glance-api and glance-manage")
    p.add_argument("--venv", required=True, help="the upstream venv (benches/upstream/setup.sh)")
    p.add_argument("--glance-api-sh", required=True, help="benches/upstream/glance_api.sh")
    p.add_argument("--workdir", required=True, help="an empty scratch directory")
    p.add_argument("--mysqldump", default="mariadb-dump")
    p.add_argument("--pg-dump", default="pg_dump")
    return p.parse_args()


def main():
    args = parse_args()
    report = Report()
    procs = Processes()
    dropped = []  # (server, db) to drop at the end

    def on_term(*_):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)

    with open(os.path.join(args.workdir, "pgid"), "w") as f:
        f.write(f"{os.getpgrp()}\n")

    servers = []
    try:
        for var in ("GLANCE_TEST_MYSQL_URL", "GLANCE_TEST_POSTGRES_URL"):
            if not os.environ.get(var):
                raise RuntimeError(f"{var} is not set (tests/db/servers.sh start DIR writes it to DIR/env)")
        servers = [MariaDB(os.environ["GLANCE_TEST_MYSQL_URL"], args.mysqldump),
                   Postgres(os.environ["GLANCE_TEST_POSTGRES_URL"], args.pg_dump),
                   SQLite(os.path.join(args.workdir, "sqlite"))]
        test(report, args, servers, procs, dropped)
    except KeyboardInterrupt as e:
        report.fail("run", f"interrupted ({e or 'SIGINT'})")
    except Exception:
        report.fail("setup", traceback.format_exc())
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        t = time.monotonic()
        kill_running()
        procs.stop()
        for server, db in dropped:
            try:
                server.drop(db)
            except Exception as e:  # noqa: BLE001
                print(f"warning: could not drop {server.label} database {db}: {e}", file=sys.stderr)
        print(f"\n(stopped the servers and dropped the databases in {time.monotonic() - t:.1f}s)")

    print(f"\n{report.passed} checks passed, {len(report.failed)} failed "
          f"({time.monotonic() - report.t0:.0f}s)")
    if report.notes:
        print(f"{len(report.notes)} notes (differences tolerated or not compared), see 'note:' above")
    if report.failed:
        print("failed checks:")
        for name in report.failed:
            print(f"  - {name}")
        return 1
    return 0


def test(report, args, servers, procs, dropped):
    work = args.workdir
    manage_ours = Manage(os.path.join(args.ours, "glance-manage"), work)
    manage_up = Manage(os.path.join(args.venv, "bin", "glance-manage"), work)
    tag = secrets.token_hex(3)
    ours_db, up_db = f"compat_{tag}_ours", f"compat_{tag}_up"
    res = {s.kind: {} for s in servers}
    shared = [s for s in servers if s.kind != "sqlite"]

    print(f"== setup: databases {ours_db} (our db_sync) and {up_db} (upstream's db_sync)", flush=True)
    for s in servers:
        for db in (ours_db, up_db):
            s.create(db)
            dropped.append((s, db))

    # Upstream's glance-api on MariaDB and PostgreSQL: db_sync on the `up` database,
    # then uWSGI. They start in the background while the schema commands run.
    stores, upstream_apis = {}, {}
    for s in shared:
        stores[s.kind] = os.path.join(work, s.kind, "store")
        os.makedirs(stores[s.kind])
        upstream_apis[s.kind] = UpstreamApi(args.glance_api_sh, os.path.join(work, s.kind, "upstream"),
                                            s.url(up_db), stores[s.kind], procs)

    # Our db_sync on the `ours` databases, dumped before upstream touches them.
    for s in servers:
        res[s.kind]["ours_sync"] = manage_ours(s.url(ours_db), "db_sync")
        try:
            res[s.kind]["ours_dump"] = s.dump(ours_db)
        except Exception as e:  # noqa: BLE001
            res[s.kind]["ours_dump_error"] = str(e)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
    try:
        on_ours = {s.kind: pool.submit(upstream_on_ours, manage_up, s.url(ours_db), s.kind)
                   for s in servers}
        sqlite = next(s for s in servers if s.kind == "sqlite")
        sqlite_sync = pool.submit(manage_up, sqlite.url(up_db), "db_sync")
        started = {k: pool.submit(api.wait) for k, api in upstream_apis.items()}
        for s in servers:
            res[s.kind]["upstream_on_ours"] = on_ours[s.kind].result()
        r = sqlite_sync.result()
        res["sqlite"]["up_sync_problems"] = expect_output(r, 0, SYNC_CREATED)
        api_errors = {}
        for k, fut in started.items():
            try:
                fut.result()
                log = upstream_apis[k].sync_log()
                res[k]["up_sync_problems"] = [] if "Database is synced successfully." in log else \
                    [f"glance_api.sh's db_sync.log does not say 'Database is synced successfully.':\n{log[-2000:]}"]
            except Exception as e:  # noqa: BLE001
                api_errors[k] = str(e)
                res[k]["up_sync_problems"] = [f"upstream glance_api.sh (db_sync, then uWSGI) failed: {e}"]
    finally:
        # On an interruption: no waiting for the commands (main() kills them).
        pool.shutdown(wait=False, cancel_futures=True)

    print(f"(schema commands done and upstream's glance-apis up after "
          f"{time.monotonic() - report.t0:.0f}s)", flush=True)

    # Upstream's schemas (no image written yet), then our commands on them.
    for s in servers:
        if res[s.kind]["up_sync_problems"]:
            continue
        try:
            res[s.kind]["up_dump"] = s.dump(up_db)
        except Exception as e:  # noqa: BLE001
            res[s.kind]["up_dump_error"] = str(e)
        res[s.kind]["ours_on_up"] = {c: manage_ours(s.url(up_db), c)
                                     for c in ("db_version", "db_check", "db_sync")}

    for s in servers:
        judge_schema(report, s, res[s.kind])

    # Section 2: our glance-api next to upstream's, on upstream's database and store.
    ours_apis = {}
    for s in shared:
        if s.kind in api_errors or res[s.kind]["up_sync_problems"]:
            continue
        ours_apis[s.kind] = OurApi(os.path.join(args.ours, "glance-api"), os.path.join(work, s.kind, "ours"),
                                   s.url(up_db), stores[s.kind], procs)
    for s in shared:
        with section(report, f"2. shared catalogue on {s.label}: both servers up"):
            if s.kind in api_errors:
                report.require(f"[{s.label}] 2 upstream glance-api starts on the database", [api_errors[s.kind]])
            up_api = upstream_apis[s.kind]
            ours_api = ours_apis[s.kind]
            try:
                ours_api.wait()
                problems = []
            except Exception as e:  # noqa: BLE001
                problems = [str(e), f"log tail:\n{ours_api.log_tail()}"]
            report.require(f"[{s.label}] 2 our glance-api starts on upstream's database "
                           f"(upstream's on {up_api.base}, ours on {ours_api.base})", problems)
            failed_before = len(report.failed)
            Shared(report, s, up_db, stores[s.kind], Api("upstream", up_api.base),
                   Api("ours", ours_api.base)).run()
            if len(report.failed) > failed_before:
                print(f"--- tail of our glance-api log ({s.label}):\n{ours_api.log_tail(20)}"
                      f"--- tail of upstream's uwsgi.log ({s.label}):\n{up_api.log_tail(20)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
