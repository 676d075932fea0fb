#!/usr/bin/env python3
"""Upstream OpenStack Glance 33.0.0 and this project's glance-api behind one
Keystone: the same requests, through the same clients, must get the same
answers from both.

Run by tests/keystone/compare.sh, with the python of the Keystone venv
(tests/keystone/keystone.sh: python-glanceclient, python-openstackclient,
openstacksdk, keystoneauth1, requests), after it has started Keystone in
--keystone-dir. Each implementation named in --impls (upstream, ours) runs with
`[paste_deploy] flavor = keystone+cachemanagement`, a `[keystone_authtoken]`
section for the user glance of the project service (token_cache_time = 5 s), a
SQLite catalogue, a file store and the image cache (sqlite driver), and no
policy file: upstream's default policies.

Scenarios; every step is run against each implementation, and its outcome (an
HTTP status, a client's result) recorded:
  1. no token, a bogus token: 401 and a `WWW-Authenticate: Keystone uri=...`
     header (raw HTTP);
  2. alpha-member creates and uploads a private raw image (glance CLI): its
     owner is alpha's project; beta-member neither sees it in a list nor can
     show it (404);
  3. alpha-member shares it with beta (openstacksdk, python-openstackclient):
     beta-member lists it only once it has accepted (glance member-update);
  4. the cache API: a member is refused (403), an admin is not (200, 202;
     glance cache-list);
  5. a revoked token is refused (401) once token_cache_time has passed;
  6. with Keystone stopped, a token never seen before is refused: upstream
     answers 401 (its paste pipeline sets delay_auth_decision, which makes
     keystonemiddleware treat a token it cannot validate as invalid), ours 503
     (Keystone is unavailable: the client should retry, not re-authenticate) --
     the one difference, checked per implementation and not compared; without a
     token both answer 401; once Keystone is back, the token is accepted.
  7. route by route (tests/compat/routes.py): the same raw requests to every
     route of the Image API, their status codes, headers and JSON shapes
     compared; the deliberate differences are listed there and in the README;
  8. openstacksdk's image proxy for what raw HTTP does not show: an admin
     deactivates and reactivates an image (deactivate_image,
     reactivate_image), and a member stages data and imports it with
     glance-direct (stage_image, import_image), then waits for it to be
     active and downloads it; each result is checked by reading the image back.
A step with an expected outcome prints `ok:` or `FAIL:` for each implementation;
with two implementations every compared step also prints `ok:`/`FAIL:` for
`same answer`. Steps that depend on timing (a token still in a cache) are noted,
neither asserted nor compared. A table of every step ends the output. Exit
status 0 when nothing failed, 1 otherwise. Everything started here (the
glance-apis; Keystone is restarted in scenario 6) is stopped at the end.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback

import openstack
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compat"))
import routes  # noqa: E402
from glance_process import GlanceProcess  # noqa: E402
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

IMPLS = ("upstream", "ours")
TOKEN_CACHE_TIME = 5
START_TIMEOUT = 150
CLI_TIMEOUT = 180
HTTP_TIMEOUT = 60
STORE_NAME = "file1"
IMAGE_DATA = b"glance behind keystone, raw test data\n" * 160  # ~6 KiB
HTTP = requests.Session()
HTTP.trust_env = False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- reporting ---------------------------------------------------------------


class Skip(Exception):
    """The rest of a scenario needs a step that failed (already reported)."""


class Report:
    """Steps as rows: scenario, step, client, expected outcome, outcome by
    implementation; whether the implementations must agree on it."""

    def __init__(self, impls):
        self.t0 = time.monotonic()
        self.impls = impls
        self.rows = []
        self.failed = []
        self.passed = 0

    def _when(self):
        return f"[{time.monotonic() - self.t0:5.1f}s]"

    def ok(self, name):
        self.passed += 1
        print(f"{self._when()} ok: {name}", flush=True)

    def fail(self, name, detail=""):
        self.failed.append(name)
        body = "\n".join("    " + line for line in str(detail).rstrip().splitlines())
        print(f"{self._when()} FAIL: {name}" + (f"\n{body}" if body else ""), flush=True)

    def note(self, text):
        print(f"{self._when()} note: {text}", flush=True)

    def row(self, scenario, step, client, expected=None, compare=True):
        r = {"scenario": scenario, "step": step, "client": client,
             "expected": expected, "compare": compare, "seen": {}}
        self.rows.append(r)
        return r

    def observe(self, row, impl, seen, detail=""):
        """Records what `impl` answered; checks it against the expected outcome."""
        row["seen"][impl] = seen
        name = f"{row['scenario']}: {row['step']} [{impl}]"
        if row["expected"] is None:
            self.note(f"{name}: {seen}")
            return True
        if seen == row["expected"]:
            self.ok(f"{name}: {seen}")
            return True
        self.fail(name, f"expected {row['expected']}, seen {seen}\n{detail}")
        return False

    def compare_all(self):
        if len(self.impls) < 2:
            return
        print("\n== the implementations agree", flush=True)
        for r in self.rows:
            if not r["compare"] or len(r["seen"]) < 2:
                continue
            name = f"same answer: {r['scenario']}: {r['step']}"
            values = [r["seen"][i] for i in self.impls if i in r["seen"]]
            if all(v == values[0] for v in values):
                self.ok(name)
            else:
                self.fail(name, ", ".join(f"{i}: {r['seen'].get(i, '-')}" for i in self.impls))

    def table(self):
        cols = ["scenario", "step", "client", "expected"] + list(self.impls)
        lines = []
        for r in self.rows:
            exp = r["expected"] if r["expected"] is not None else (
                "(compared)" if r["compare"] else "(noted)")
            lines.append([r["scenario"], r["step"], r["client"], exp]
                         + [r["seen"].get(i, "-") for i in self.impls])
        widths = [max(len(str(x)) for x in col) for col in zip(cols, *lines)]
        fmt = " | ".join(f"{{:<{w}}}" for w in widths)
        print("\n== table", flush=True)
        print(fmt.format(*cols))
        print("-+-".join("-" * w for w in widths))
        for line in lines:
            print(fmt.format(*[str(x) for x in line]))
        sys.stdout.flush()


# --- commands ----------------------------------------------------------------


class Run:
    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    def seen(self):
        err = self.err.strip().splitlines()
        # Passwords stay out of the report.
        argv = []
        for i, a in enumerate(self.argv):
            argv.append("***" if i and self.argv[i - 1] == "--os-password" else a)
        return (f"command: {' '.join(argv)}\nexit status: {self.rc}\n"
                f"stdout:\n{self.out.rstrip() or '(empty)'}\n"
                f"stderr (last lines):\n" + "\n".join(err[-12:]))


def run(argv, env=None, timeout=CLI_TIMEOUT):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return Run(argv, -1, e.stdout or "", (e.stderr or "") + f"\n(timed out after {timeout}s)")
    return Run(argv, p.returncode, p.stdout, p.stderr)


def client_env(extra=None):
    """The environment of the clients: no OS_* variables, no proxy for loopback."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OS_") and k.lower() not in ("http_proxy", "https_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra or {})
    return env


def cli_outcome(r):
    """ok, or `error NNN` with the HTTP status a client printed, or its exit status."""
    if r.rc == 0:
        return "ok"
    m = re.search(r"\b(?:HTTP |\()?([45]\d\d)\b", r.err + r.out)
    return f"error {m.group(1)}" if m else f"exit {r.rc}"


def cli_table(text):
    """glance's `| Property | Value |` table as a dict."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and line.startswith("|"):
            out[cells[0]] = cells[1]
    return out


# --- Keystone ----------------------------------------------------------------


class Keystone:
    def __init__(self, script, directory):
        self.script, self.dir = script, directory
        self.env = {}
        with open(os.path.join(directory, "env")) as f:
            for line in f:
                k, sep, v = line.rstrip("\n").partition("=")
                if sep:
                    self.env[k] = v
        self.url = self.env["KEYSTONE_URL"]
        self.venv = self.env["KEYSTONE_VENV"]
        self.users = {"admin": (self.env["KEYSTONE_ADMIN_PASSWORD"], "admin")}
        for p in ("alpha", "beta"):
            for role in ("admin", "member"):
                key = f"{p.upper()}_{role.upper()}"
                self.users[self.env[f"{key}_USER"]] = (self.env[f"{key}_PASSWORD"], p)
        self.project_ids = {self.env["ALPHA_PROJECT_ID"]: "alpha-project-id",
                            self.env["BETA_PROJECT_ID"]: "beta-project-id"}

    def symbolic(self, text):
        for pid, name in self.project_ids.items():
            text = text.replace(pid, name)
        return text

    def session(self, user):
        password, project = self.users[user]
        auth = v3.Password(auth_url=self.url, username=user, password=password,
                           project_name=project, user_domain_name="Default",
                           project_domain_name="Default")
        s = ks_session.Session(auth=auth)
        s.session.trust_env = False
        return s

    def token(self, user):
        """A new token of `user`, scoped to its project."""
        return self.session(user).get_token()

    def revoke(self, token):
        """The token's own user revokes it (identity:revoke_token, token subject)."""
        r = HTTP.delete(f"{self.url}/auth/tokens", timeout=HTTP_TIMEOUT,
                        headers={"X-Auth-Token": token, "X-Subject-Token": token})
        return r.status_code

    def stop(self):
        return run([self.script, "stop", self.dir], env=client_env(), timeout=120)

    def start(self):
        return run([self.script, "start", self.dir], env=client_env(), timeout=300)


# --- the glance-apis ---------------------------------------------------------


def glance_conf(directory, port, ks):
    return f"""[DEFAULT]
bind_host = 127.0.0.1
bind_port = {port}
enabled_backends = {STORE_NAME}:file
image_cache_dir = {directory}/cache
image_cache_driver = sqlite
image_cache_max_size = 1073741824
image_cache_stall_time = 86400
debug = false
use_stderr = true

[database]
connection = sqlite:///{directory}/glance.db

[paste_deploy]
flavor = keystone+cachemanagement
config_file = {directory}/etc/glance-api-paste.ini

[glance_store]
default_backend = {STORE_NAME}

[{STORE_NAME}]
filesystem_store_datadir = {directory}/images

[os_glance_staging_store]
filesystem_store_datadir = {directory}/staging

[os_glance_tasks_store]
filesystem_store_datadir = {directory}/tasks

[oslo_concurrency]
lock_path = {directory}/locks

[keystone_authtoken]
auth_type = password
auth_url = {ks.url}
www_authenticate_uri = {ks.url}
username = {ks.env["GLANCE_SERVICE_USER"]}
password = {ks.env["GLANCE_SERVICE_PASSWORD"]}
project_name = {ks.env["GLANCE_SERVICE_PROJECT"]}
user_domain_name = Default
project_domain_name = Default
region_name = {ks.env["KEYSTONE_REGION"]}
token_cache_time = {TOKEN_CACHE_TIME}
"""


def prepare_dir(directory, port, ks):
    for d in ("etc", "images", "cache", "staging", "tasks", "locks"):
        os.makedirs(os.path.join(directory, d), exist_ok=True)
    conf = os.path.join(directory, "etc", "glance-api.conf")
    with open(conf, "w") as f:
        f.write(glance_conf(directory, port, ks))
    return conf


class Server(GlanceProcess):
    name = ""

    def __init__(self):
        self.popen = None
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = ""

    def wait(self):
        GlanceProcess.wait(self, START_TIMEOUT)

    def stop(self):
        GlanceProcess.stop(self, grace=20)


class Upstream(Server):
    """Upstream's glance-api under uWSGI, as benches/upstream/glance_api.sh runs
    it, with the keystone+cachemanagement flavor and the default policies."""

    name = "upstream"

    def __init__(self, venv, directory, ks):
        super().__init__()
        conf = prepare_dir(directory, self.port, ks)
        with open(os.path.join(venv, "etc", "glance", "glance-api-paste.ini")) as src, \
                open(os.path.join(directory, "etc", "glance-api-paste.ini"), "w") as dst:
            dst.write(src.read())
        # One worker: one token cache, so what the cache holds is predictable.
        ini = os.path.join(directory, "etc", "uwsgi.ini")
        with open(ini, "w") as f:
            f.write(f"""[uwsgi]
http-socket = 127.0.0.1:{self.port}
module = glance.wsgi.api:application
chdir = {directory}
master = true
processes = 1
threads = 1
enable-threads = true
lazy-apps = true
die-on-term = true
need-app = true
http-raw-body = true
http-chunked-input = true
http-auto-chunked = true
chunked-input-limit = 16777216
buffer-size = 65535
http-keepalive = false
add-header = Connection: close
""")
        env = client_env({"OS_GLANCE_CONFIG_DIR": os.path.join(directory, "etc")})
        sync = run([os.path.join(venv, "bin", "glance-manage"), "--config-file", conf,
                    "db_sync"], env=env, timeout=300)
        if sync.rc != 0:
            raise RuntimeError(f"glance-manage db_sync failed:\n{sync.seen()}")
        self.log = os.path.join(directory, "uwsgi.log")
        with open(self.log, "w") as log:
            self.popen = subprocess.Popen([os.path.join(venv, "bin", "uwsgi"), "--ini", ini],
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env)


class Ours(Server):
    name = "ours"

    def __init__(self, binary, directory, ks):
        super().__init__()
        conf = prepare_dir(directory, self.port, ks)
        self.log = os.path.join(directory, "glance-api.log")
        with open(self.log, "w") as log:
            self.popen = subprocess.Popen([binary, "--config-file", conf],
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=client_env())


# --- clients -----------------------------------------------------------------


class Clients:
    """The glance CLI, the openstack CLI, openstacksdk and raw HTTP, as a user of
    Keystone, against one glance-api."""

    def __init__(self, ks, workdir):
        self.ks, self.workdir = ks, workdir
        self.conns = {}

    def _auth_args(self, user):
        password, project = self.ks.users[user]
        return ["--os-auth-url", self.ks.url, "--os-username", user,
                "--os-password", password, "--os-project-name", project,
                "--os-user-domain-name", "Default", "--os-project-domain-name", "Default"]

    def glance(self, server, user, *args):
        argv = [os.path.join(self.ks.venv, "bin", "glance")] + self._auth_args(user) + [
            "--os-image-url", server.base] + list(args)
        return run(argv, env=client_env())

    def openstack(self, server, user, *args):
        argv = [os.path.join(self.ks.venv, "bin", "openstack")] + self._auth_args(user) + [
            "--os-region-name", self.ks.env["KEYSTONE_REGION"], "--os-interface", "public"
        ] + list(args)
        return run(argv, env=client_env({"OS_IMAGE_ENDPOINT_OVERRIDE": server.base}))

    def sdk(self, server, user):
        key = (server.name, user)
        if key not in self.conns:
            password, project = self.ks.users[user]
            self.conns[key] = openstack.connect(
                auth_url=self.ks.url, username=user, password=password, project_name=project,
                user_domain_name="Default", project_domain_name="Default",
                region_name=self.ks.env["KEYSTONE_REGION"], interface="public",
                image_endpoint_override=server.base,
                load_yaml_config=False, load_envvars=False)
            self.conns[key].session.session.trust_env = False
        return self.conns[key]

    @staticmethod
    def http(server, method, path, token=None, **kw):
        headers = kw.pop("headers", {})
        if token is not None:
            headers["X-Auth-Token"] = token
        headers.setdefault("Accept", "application/json")
        return HTTP.request(method, server.base + path, headers=headers,
                            timeout=HTTP_TIMEOUT, **kw)


def sdk_outcome(fn):
    """(ok, result) or (`error NNN`, None) from an openstacksdk call."""
    try:
        return "ok", fn()
    except openstack.exceptions.HttpException as e:
        return f"error {e.status_code}", None


# --- scenarios ---------------------------------------------------------------


class Scenarios:
    def __init__(self, report, servers, ks, clients, workdir):
        self.report, self.servers, self.ks, self.c = report, servers, ks, clients
        self.workdir = workdir
        self.image = {}  # server name -> id of the image of scenario 2
        self.data_path = os.path.join(workdir, "image.raw")
        with open(self.data_path, "wb") as f:
            f.write(IMAGE_DATA)
        self.tokens = {}
        self.cache_manage = None  # our glance-cache-manage, when ours was built

    def token(self, user):
        if user not in self.tokens:
            self.tokens[user] = self.ks.token(user)
        return self.tokens[user]

    def step(self, scenario, step, client, fn, expected=None, compare=True, servers=None):
        """Runs fn(server) -> (outcome, detail) against each server; records it."""
        row = self.report.row(scenario, step, client, expected, compare)
        good = True
        for s in servers if servers is not None else self.servers:
            try:
                seen, detail = fn(s)
            except Exception:
                seen, detail = "exception", traceback.format_exc()
            good = self.report.observe(row, s.name, seen, detail) and good
        return good

    def shared(self, scenario, step, client, seen, expected, detail=""):
        """A step on Keystone, not on a glance-api: one outcome in every column."""
        row = self.report.row(scenario, step, client, expected, compare=False)
        ok = seen == expected
        for s in self.servers:
            row["seen"][s.name] = seen
        name = f"{scenario}: {step}"
        if ok:
            self.report.ok(f"{name}: {seen}")
        else:
            self.report.fail(name, f"expected {expected}, seen {seen}\n{detail}")
        return ok

    def http_status(self, method, path, token=None, **kw):
        def fn(s):
            r = self.c.http(s, method, path.replace("{id}", self.image.get(s.name, "-")),
                            token=token, **kw)
            return str(r.status_code), f"body: {r.text[:400]}"
        return fn

    def with_header(self, token):
        """GET /v2/images: the status and the WWW-Authenticate header."""
        def fn(s):
            r = self.c.http(s, "GET", "/v2/images", token=token)
            h = r.headers.get("WWW-Authenticate", "(none)")
            return f"{r.status_code}, {h}", f"body: {r.text[:400]}"
        return fn

    # 1 ---------------------------------------------------------------------
    def s1_no_token(self):
        sc = "1 no token"
        want = f'Keystone uri="{self.ks.url}"'

        self.step(sc, "GET /v2/images, no token", "http", self.with_header(None),
                  f"401, {want}")
        self.step(sc, "GET /v2/images, bogus token", "http", self.with_header("bogus-token"),
                  f"401, {want}")
        self.step(sc, "GET / (versions), no token", "http", self.http_status("GET", "/"))
        self.step(sc, "GET /versions, no token", "http", self.http_status("GET", "/versions"))
        self.step(sc, "GET /healthcheck, no token", "http",
                  self.http_status("GET", "/healthcheck"))

    # 2 ---------------------------------------------------------------------
    def s2_private_image(self):
        sc = "2 private image"

        def create(s):
            r = self.c.glance(s, "alpha-member", "image-create", "--name", "alpha-private",
                              "--disk-format", "raw", "--container-format", "bare",
                              "--visibility", "private", "--file", self.data_path)
            props = cli_table(r.out)
            if r.rc != 0 or "id" not in props:
                return cli_outcome(r), r.seen()
            self.image[s.name] = props["id"]
            return f"{props.get('status')}, {props.get('visibility')}, size {props.get('size')}", \
                r.seen()

        if not self.step(sc, "alpha-member image-create --file", "glance CLI", create,
                         f"active, private, size {len(IMAGE_DATA)}"):
            raise Skip("image-create")

        def owner(s):
            r = self.c.glance(s, "alpha-member", "image-show", self.image[s.name])
            return self.ks.symbolic(cli_table(r.out).get("owner", cli_outcome(r))), r.seen()

        self.step(sc, "alpha-member image-show: owner", "glance CLI", owner,
                  "alpha-project-id")

        def download(user):
            def fn(s):
                out = os.path.join(self.workdir, f"download-{s.name}-{user}.raw")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(out)
                r = self.c.glance(s, user, "image-download", "--file", out, self.image[s.name])
                if r.rc != 0:
                    return cli_outcome(r), r.seen()
                with open(out, "rb") as f:
                    got = f.read()
                same = hashlib.sha256(got).digest() == hashlib.sha256(IMAGE_DATA).digest()
                return ("same bytes" if same else f"{len(got)} other bytes"), r.seen()
            return fn

        self.step(sc, "alpha-member image-download", "glance CLI", download("alpha-member"),
                  "same bytes")
        self.step(sc, "alpha-member image-list", "glance CLI", self.listed("alpha-member"),
                  "listed")
        self.step(sc, "beta-member GET /v2/images/{id}", "http",
                  self.http_status("GET", "/v2/images/{id}", token=self.token("beta-member")),
                  "404")

        def show(user):
            def fn(s):
                r = self.c.glance(s, user, "image-show", self.image[s.name])
                return cli_outcome(r), r.seen()
            return fn

        self.step(sc, "beta-member image-show", "glance CLI", show("beta-member"))
        self.step(sc, "beta-member image-list", "glance CLI", self.listed("beta-member"),
                  "absent")
        self.step(sc, "alpha-admin GET /v2/images/{id}", "http",
                  self.http_status("GET", "/v2/images/{id}", token=self.token("alpha-admin")),
                  "200")

    def listed(self, user, *args):
        def fn(s):
            r = self.c.glance(s, user, "image-list", *args)
            if r.rc != 0:
                return cli_outcome(r), r.seen()
            return ("listed" if self.image[s.name] in r.out else "absent"), r.seen()
        return fn

    # 3 ---------------------------------------------------------------------
    def s3_shared(self):
        sc = "3 shared image"
        beta_id = self.ks.env["BETA_PROJECT_ID"]

        def set_shared(s):
            conn = self.c.sdk(s, "alpha-member")
            seen, img = sdk_outcome(lambda: conn.image.update_image(self.image[s.name],
                                                                    visibility="shared"))
            return (img.visibility if img is not None else seen), ""

        if not self.step(sc, "alpha-member update_image(visibility=shared)", "openstacksdk",
                         set_shared, "shared"):
            raise Skip("visibility shared")

        def add_member(s):
            r = self.c.openstack(s, "alpha-member", "image", "add", "project", "-f", "json",
                                 self.image[s.name], beta_id)
            if r.rc != 0:
                return cli_outcome(r), r.seen()
            doc = json.loads(r.out)
            return self.ks.symbolic(f"{doc.get('member_id')} {doc.get('status')}"), r.seen()

        if not self.step(sc, "alpha-member openstack image add project", "openstack CLI",
                         add_member, "beta-project-id pending"):
            raise Skip("add member")

        def sdk_list(user, **query):
            def fn(s):
                conn = self.c.sdk(s, user)
                seen, imgs = sdk_outcome(lambda: [i.id for i in conn.image.images(**query)])
                if imgs is None:
                    return seen, ""
                return ("listed" if self.image[s.name] in imgs else "absent"), ""
            return fn

        def osc_show(user):
            def fn(s):
                r = self.c.openstack(s, user, "image", "show", "-f", "json", self.image[s.name])
                if r.rc != 0:
                    return cli_outcome(r), r.seen()
                return f"ok, {json.loads(r.out).get('visibility')}", r.seen()
            return fn

        self.step(sc, "pending: beta-member images()", "openstacksdk",
                  sdk_list("beta-member"), "absent")
        self.step(sc, "pending: beta-member images(visibility=shared)", "openstacksdk",
                  sdk_list("beta-member", visibility="shared"))
        self.step(sc, "pending: beta-member images(visibility=shared, member_status=pending)",
                  "openstacksdk",
                  sdk_list("beta-member", visibility="shared", member_status="pending"),
                  "listed")
        self.step(sc, "pending: beta-member openstack image show", "openstack CLI",
                  osc_show("beta-member"))
        self.step(sc, "pending: beta-member GET /v2/images/{id}", "http",
                  self.http_status("GET", "/v2/images/{id}", token=self.token("beta-member")))
        self.step(sc, "pending: beta-member image-list", "glance CLI",
                  self.listed("beta-member"), "absent")

        def accept(s):
            r = self.c.glance(s, "beta-member", "member-update", self.image[s.name], beta_id,
                              "accepted")
            if r.rc != 0:
                return cli_outcome(r), r.seen()
            return ("accepted" if "accepted" in r.out else "ok"), r.seen()

        if not self.step(sc, "beta-member member-update accepted", "glance CLI", accept,
                         "accepted"):
            raise Skip("member-update accepted")

        self.step(sc, "accepted: beta-member images()", "openstacksdk",
                  sdk_list("beta-member"), "listed")
        self.step(sc, "accepted: beta-member images(visibility=shared)", "openstacksdk",
                  sdk_list("beta-member", visibility="shared"), "listed")
        self.step(sc, "accepted: beta-member image-list", "glance CLI",
                  self.listed("beta-member"), "listed")
        self.step(sc, "accepted: beta-member image-list --visibility shared", "glance CLI",
                  self.listed("beta-member", "--visibility", "shared"), "listed")

        def osc_list(user, *args):
            def fn(s):
                r = self.c.openstack(s, user, "image", "list", "-f", "json", *args)
                if r.rc != 0:
                    return cli_outcome(r), r.seen()
                ids = [i.get("ID") for i in json.loads(r.out)]
                return ("listed" if self.image[s.name] in ids else "absent"), r.seen()
            return fn

        self.step(sc, "accepted: beta-member openstack image list --shared", "openstack CLI",
                  osc_list("beta-member", "--shared"), "listed")

        def members(s):
            conn = self.c.sdk(s, "alpha-member")
            seen, ms = sdk_outcome(lambda: [(m.member_id, m.status)
                                            for m in conn.image.members(self.image[s.name])])
            if ms is None:
                return seen, ""
            return self.ks.symbolic(", ".join(f"{i} {st}" for i, st in ms)), ""

        self.step(sc, "alpha-member members()", "openstacksdk", members,
                  "beta-project-id accepted")

        def download(s):
            conn = self.c.sdk(s, "beta-member")
            seen, body = sdk_outcome(lambda: conn.image.download_image(self.image[s.name]))
            if body is None:
                return seen, ""
            data = body.content if hasattr(body, "content") else body
            return ("same bytes" if data == IMAGE_DATA else f"{len(data)} other bytes"), ""

        self.step(sc, "accepted: beta-member download_image()", "openstacksdk", download,
                  "same bytes")
        self.step(sc, "beta-member DELETE /v2/images/{id}", "http",
                  self.http_status("DELETE", "/v2/images/{id}", token=self.token("beta-member")))

    # 4 ---------------------------------------------------------------------
    def s4_cache(self):
        sc = "4 cache API"
        member, admin = self.token("alpha-member"), self.token("alpha-admin")
        self.step(sc, "alpha-member GET /v2/cache", "http",
                  self.http_status("GET", "/v2/cache", token=member), "403")
        self.step(sc, "alpha-admin GET /v2/cache", "http",
                  self.http_status("GET", "/v2/cache", token=admin), "200")
        self.step(sc, "alpha-member PUT /v2/cache/{id}", "http",
                  self.http_status("PUT", "/v2/cache/{id}", token=member), "403")
        self.step(sc, "alpha-admin PUT /v2/cache/{id}", "http",
                  self.http_status("PUT", "/v2/cache/{id}", token=admin), "202")

        def cache_list(user):
            def fn(s):
                r = self.c.glance(s, user, "cache-list")
                if r.rc != 0:
                    return cli_outcome(r), r.seen()
                queued = self.image[s.name] in r.out
                return ("ok, image queued" if queued else "ok, image not listed"), r.seen()
            return fn

        self.step(sc, "alpha-admin cache-list", "glance CLI", cache_list("alpha-admin"),
                  "ok, image queued")

        if self.cache_manage:
            # Our glance-cache-manage takes upstream's command line, against either
            # implementation (upstream reads an empty chunked body as Malformed JSON).
            def queue_with_tool(s):
                port = s.base.rsplit(":", 1)[1]
                r = run([self.cache_manage, "--host", "127.0.0.1", "--port", port,
                         "--os-auth-token", admin, "-f", "queue-image", self.image[s.name]],
                        env=client_env())
                return cli_outcome(r), r.seen()

            self.step(sc, "alpha-admin glance-cache-manage queue-image", "glance-cache-manage",
                      queue_with_tool, "ok")
        self.step(sc, "alpha-member cache-list", "glance CLI", cache_list("alpha-member"))
        self.step(sc, "beta-admin GET /v2/cache", "http",
                  self.http_status("GET", "/v2/cache", token=self.token("beta-admin")))
        self.step(sc, "alpha-admin DELETE /v2/cache/{id}", "http",
                  self.http_status("DELETE", "/v2/cache/{id}", token=admin))

    # 5 ---------------------------------------------------------------------
    def s5_revoked(self):
        sc = "5 revoked token"
        token = self.ks.token("alpha-member")  # a new one, not in any cache
        self.step(sc, "alpha-member new token: GET /v2/images", "http",
                  self.http_status("GET", "/v2/images", token=token), "200")
        code = self.ks.revoke(token)
        self.shared(sc, "the user revokes it: DELETE /v3/auth/tokens", "keystone http",
                    str(code), "204")
        revoked_at = time.monotonic()
        self.step(sc, "at once: GET /v2/images (may be cached)", "http",
                  self.http_status("GET", "/v2/images", token=token), compare=False)
        time.sleep(max(0.0, revoked_at + TOKEN_CACHE_TIME + 1 - time.monotonic()))
        self.step(sc, f"after {TOKEN_CACHE_TIME + 1}s: GET /v2/images", "http",
                  self.http_status("GET", "/v2/images", token=token), "401")
        self.step(sc, "after: alpha-member's other token still works", "http",
                  self.http_status("GET", "/v2/images", token=self.token("alpha-member")),
                  "200")

    # 6 ---------------------------------------------------------------------
    def s6_keystone_down(self):
        sc = "6 Keystone stopped"
        cached = self.ks.token("alpha-member")
        fresh = self.ks.token("beta-member")
        self.step(sc, "before: alpha-member new token: GET /v2/images", "http",
                  self.http_status("GET", "/v2/images", token=cached), "200")
        r = self.ks.stop()
        if not self.shared(sc, "keystone.sh stop", "keystone.sh", cli_outcome(r), "ok",
                           r.seen()):
            raise Skip("keystone.sh stop")
        try:
            self.step(sc, "that token again (may be cached)", "http",
                      self.http_status("GET", "/v2/images", token=cached), compare=False)
            want = f'401, Keystone uri="{self.ks.url}"'
            # The one deliberate difference: upstream's delay_auth_decision turns
            # "Keystone cannot be asked" into 401 (the user's credentials look wrong);
            # ours answers 503, so clients retry instead of re-authenticating.
            down = {"upstream": want, "ours": "503, (none)"}
            for s in self.servers:
                for step, token in (("beta-member token never seen", fresh),
                                    ("bogus token", "bogus-token")):
                    self.step(sc, f"{step}: GET /v2/images ({s.name})", "http",
                              self.with_header(token), down[s.name], compare=False,
                              servers=[s])
            self.step(sc, "no token: GET /v2/images", "http", self.with_header(None), want)
        finally:
            r = self.ks.start()
            started = self.shared(sc, "keystone.sh start (same port and data)", "keystone.sh",
                                  cli_outcome(r), "ok", r.seen())
        if not started:
            raise Skip("keystone.sh start")
        self.step(sc, "Keystone back: the token never seen: GET /v2/images", "http",
                  self.http_status("GET", "/v2/images", token=fresh), "200")
        self.step(sc, "Keystone back: alpha-member image-list", "glance CLI",
                  self.listed("alpha-member"), "listed")


    # 7 ---------------------------------------------------------------------
    def s7_routes(self):
        sc = "7 routes"
        if len(self.servers) < 2:
            raise Skip("two implementations")
        tokens = {"member": self.token("alpha-member"), "admin": self.token("alpha-admin"),
                  "beta": self.token("beta-member")}
        project_ids = {"beta": self.ks.env["BETA_PROJECT_ID"]}
        sequences = {}
        for s in self.servers:
            sequences[s.name] = routes.Sequence(self.c.http, s, tokens, project_ids).run()
        for step, ok, detail in routes.compare(sequences):
            name = f"{sc}: {step}"
            row = self.report.row(sc, step, "http", None, compare=False)
            for n, seq in sequences.items():
                row["seen"][n] = str(seq.answers.get(step, {}).get("status", "-"))
            if ok:
                self.report.ok(name + (f" ({detail})" if detail else ""))
            else:
                self.report.fail(name, detail)

    # 8 ---------------------------------------------------------------------
    def s8_sdk_actions(self):
        sc = "8 openstacksdk actions"

        def deactivate(s):
            admin = self.c.sdk(s, "alpha-admin")
            image = admin.image.create_image(name="sdk-deactivate", disk_format="raw",
                                             container_format="bare", data=IMAGE_DATA)
            try:
                outcome, _ = sdk_outcome(lambda: admin.image.deactivate_image(image))
                first = admin.image.get_image(image.id).status
                outcome2, _ = sdk_outcome(lambda: admin.image.reactivate_image(image))
                second = admin.image.get_image(image.id).status
                return f"{outcome}: {first}; {outcome2}: {second}", ""
            finally:
                admin.image.delete_image(image.id, ignore_missing=True)

        self.step(sc, "deactivate_image, reactivate_image", "openstacksdk", deactivate,
                  "ok: deactivated; ok: active")

        def glance_direct(s):
            member = self.c.sdk(s, "alpha-member")
            image = member.image.create_image(name="sdk-import", disk_format="raw",
                                              container_format="bare")
            try:
                outcome, _ = sdk_outcome(lambda: member.image.stage_image(image, data=IMAGE_DATA))
                staged = member.image.get_image(image.id).status
                outcome2, _ = sdk_outcome(
                    lambda: member.image.import_image(image, method="glance-direct"))
                deadline = time.monotonic() + 60
                status = member.image.get_image(image.id).status
                while status not in ("active", "queued", "killed") and time.monotonic() < deadline:
                    time.sleep(0.5)
                    status = member.image.get_image(image.id).status
                data = b""
                if status == "active":
                    data = member.image.download_image(image.id).content
                same = "same data" if data == IMAGE_DATA else "other data"
                return f"stage {outcome}: {staged}; import {outcome2}: {status}, {same}", ""
            finally:
                member.image.delete_image(image.id, ignore_missing=True)

        self.step(sc, "stage_image, import_image glance-direct", "openstacksdk", glance_direct,
                  "stage ok: uploading; import ok: active, same data")


# --- main --------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impls", default="upstream ours")
    ap.add_argument("--upstream-venv")
    ap.add_argument("--ours", help="our glance-api binary")
    ap.add_argument("--keystone-sh", required=True)
    ap.add_argument("--keystone-dir", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    impls = args.impls.split()
    if not impls or any(i not in IMPLS for i in impls):
        sys.exit(f"--impls: a list of {' and '.join(IMPLS)}, got {args.impls!r}")

    # The shell wrapper kills this process group if we do not stop in time.
    with open(os.path.join(args.workdir, "pgid"), "w") as f:
        f.write(f"{os.getpgrp()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    report = Report(impls)
    ks = Keystone(args.keystone_sh, args.keystone_dir)
    servers, starting = [], []
    try:
        print("== starting the glance-apis", flush=True)
        for impl in impls:
            directory = os.path.join(args.workdir, impl)
            try:
                if impl == "upstream":
                    starting.append(Upstream(args.upstream_venv, directory, ks))
                else:
                    starting.append(Ours(args.ours, directory, ks))
            except Exception as e:
                report.fail(f"start {impl}", str(e))
        for s in starting:
            try:
                s.wait()
                report.ok(f"start {s.name}: {s.base}")
                servers.append(s)
            except Exception as e:
                report.fail(f"start {s.name}", str(e))
                s.stop()
        if servers:
            sc = Scenarios(report, servers, ks, Clients(ks, args.workdir), args.workdir)
            if args.ours:
                sc.cache_manage = os.path.join(os.path.dirname(args.ours), "glance-cache-manage")
            for title, fn in (("1 no token", sc.s1_no_token),
                              ("2 private image", sc.s2_private_image),
                              ("3 shared image", sc.s3_shared),
                              ("4 cache API", sc.s4_cache),
                              ("5 revoked token", sc.s5_revoked),
                              ("6 Keystone stopped", sc.s6_keystone_down),
                              ("7 routes", sc.s7_routes),
                              ("8 openstacksdk actions", sc.s8_sdk_actions)):
                print(f"\n== {title}", flush=True)
                if title[0] in "34" and not sc.image:
                    print("   (skipped: it needs the image of scenario 2)", flush=True)
                    continue
                try:
                    fn()
                except Skip as e:
                    print(f"   (the rest of this scenario is skipped: it needs '{e}')",
                          flush=True)
                except Exception:
                    report.fail(f"{title}: unexpected error", traceback.format_exc())
            report.compare_all()
    finally:
        for s in starting:
            s.stop()
    report.table()
    print(f"\n{report.passed} passed, {len(report.failed)} failed", flush=True)
    if report.failed:
        print("failed:\n" + "\n".join(f"  {n}" for n in report.failed), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
