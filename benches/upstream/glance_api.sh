#!/usr/bin/env bash
# Start upstream OpenStack Glance's API (the version pinned in setup.sh) on
# 127.0.0.1:PORT under uWSGI, in the background, for benchmark comparisons:
# no keystone (every caller is admin), sqlite database, one file store and
# the image cache on (the `cachemanagement` paste flavor, sqlite cache driver).
#
# Usage: glance_api.sh DIR PORT
#
#   DIR   an empty (or absent) work directory; receives the configuration,
#         the database (glance.db), images (images/), the image cache
#         (cache/), staging dirs, uwsgi.pid and uwsgi.log.
#   PORT  TCP port to listen on (127.0.0.1 only).
#
# Creates the venv with setup.sh if needed, syncs the DB, starts uWSGI and
# waits (up to GLANCE_API_TIMEOUT seconds, default 120) until /healthcheck
# answers 200, then prints `http://127.0.0.1:PORT` on stdout and exits 0,
# leaving uWSGI running. Its master PID is in DIR/uwsgi.pid; stop it with
# `kill "$(cat DIR/uwsgi.pid)"` (SIGTERM makes the master exit, in ~4 s, with its
# workers). On failure it prints a message and the log tail on stderr,
# stops uWSGI and exits non-zero.
#
# Environment: GLANCE_API_TIMEOUT (seconds, default 120),
#   GLANCE_API_PROCESSES (uWSGI worker processes, default 2),
#   GLANCE_API_CACHE_MAX_SIZE (image_cache_max_size in bytes, default 100 GiB),
#   GLANCE_API_DB_URL ([database] connection; default sqlite in DIR/glance.db;
#   a MariaDB/MySQL or PostgreSQL URL is synced with db_sync like the default),
#   GLANCE_API_STORE_DIR (filesystem_store_datadir of store file1; default
#   DIR/images: point two servers at one directory to share image data),
#   GLANCE_API_ENABLED_BACKENDS ([DEFAULT] enabled_backends, default
#   `file1:file`) and GLANCE_API_DEFAULT_BACKEND ([glance_store]
#   default_backend, default `file1`), GLANCE_API_STORE_CONF (INI text
#   appended to glance-api.conf, e.g. the sections of the backends named in
#   GLANCE_API_ENABLED_BACKENDS other than file1; default none),
#   GLANCE_API_FRONTEND: `socket` (default; the workers speak HTTP
#   themselves via http-socket) or `router` (uWSGI's HTTP router process in
#   front of the workers, as devstack runs Glance). The router costs a copy
#   through one more process per byte: on a 2-core box it caps a cached
#   1 GiB GET at ~0.3 GB/s versus ~1.5 GB/s with `socket`. Chunked uploads
#   (glanceclient) work in both modes.
#
# Talk to it with e.g.
#   glance --os-image-url http://127.0.0.1:PORT --os-auth-token x image-list
# or plain HTTP (POST /v2/images, PUT|GET /v2/images/ID/file,
# GET /v2/cache, PUT|DELETE /v2/cache/ID).
set -euo pipefail

die() {
    echo "glance_api.sh: $*" >&2
    exit 1
}

if [[ $# -ne 2 ]]; then
    echo "usage: $0 DIR PORT" >&2
    exit 2
fi
DIR_ARG="$1"
PORT="$2"
if ! [[ "${PORT}" =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    die "PORT must be an integer in 1..65535, got '${PORT}'"
fi

TIMEOUT="${GLANCE_API_TIMEOUT:-120}"
PROCESSES="${GLANCE_API_PROCESSES:-2}"
CACHE_MAX_SIZE="${GLANCE_API_CACHE_MAX_SIZE:-107374182400}"
FRONTEND="${GLANCE_API_FRONTEND:-socket}"
DB_URL="${GLANCE_API_DB_URL:-}"
STORE_DIR="${GLANCE_API_STORE_DIR:-}"
ENABLED_BACKENDS="${GLANCE_API_ENABLED_BACKENDS:-file1:file}"
DEFAULT_BACKEND="${GLANCE_API_DEFAULT_BACKEND:-file1}"
STORE_CONF="${GLANCE_API_STORE_CONF:-}"
case "${FRONTEND}" in
    router) LISTEN="http = 127.0.0.1:${PORT}" ;;
    socket) LISTEN="http-socket = 127.0.0.1:${PORT}" ;;
    *) die "GLANCE_API_FRONTEND must be 'router' or 'socket', got '${FRONTEND}'" ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

mkdir -p -- "${DIR_ARG}"
DIR="$(cd -- "${DIR_ARG}" && pwd)"
if [[ -n "$(ls -A -- "${DIR}")" ]]; then
    die "work dir ${DIR} is not empty"
fi

command -v curl >/dev/null || die "curl is required"

VENV="$("${HERE}/setup.sh")"
[[ -x "${VENV}/bin/uwsgi" ]] || die "no uwsgi in ${VENV} (setup.sh failed?)"
PASTE_SRC="${VENV}/etc/glance/glance-api-paste.ini"
[[ -f "${PASTE_SRC}" ]] || die "missing ${PASTE_SRC}"

# Refuse early if something already listens there (uWSGI would only log it).
if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:${PORT}/"; then
    die "something already answers on 127.0.0.1:${PORT}"
fi

DB_URL="${DB_URL:-sqlite:///${DIR}/glance.db}"
STORE_DIR="${STORE_DIR:-${DIR}/images}"
mkdir -p "${DIR}/etc" "${STORE_DIR}" "${DIR}/cache" "${DIR}/staging" \
    "${DIR}/tasks" "${DIR}/locks"

cp -- "${PASTE_SRC}" "${DIR}/etc/glance-api-paste.ini"

# Without keystone the request context has no roles; Glance 33's default
# (secure RBAC) policies then answer 403 to everything. Making
# context_is_admin always true turns every caller into an admin.
cat >"${DIR}/etc/policy.yaml" <<'EOF'
"context_is_admin": ""
EOF

cat >"${DIR}/etc/glance-api.conf" <<EOF
[DEFAULT]
enabled_backends = ${ENABLED_BACKENDS}
image_cache_dir = ${DIR}/cache
# The default centralized_db driver refuses to start without
# worker_self_reference_url.
image_cache_driver = sqlite
image_cache_max_size = ${CACHE_MAX_SIZE}
image_cache_stall_time = 86400
debug = false
use_stderr = true

[database]
connection = ${DB_URL}

[paste_deploy]
flavor = cachemanagement
config_file = ${DIR}/etc/glance-api-paste.ini

[glance_store]
default_backend = ${DEFAULT_BACKEND}

[file1]
filesystem_store_datadir = ${STORE_DIR}

# Reserved stores; their defaults live under /var/lib/glance.
[os_glance_staging_store]
filesystem_store_datadir = ${DIR}/staging

[os_glance_tasks_store]
filesystem_store_datadir = ${DIR}/tasks

[oslo_concurrency]
lock_path = ${DIR}/locks

[oslo_policy]
policy_file = ${DIR}/etc/policy.yaml
EOF
if [[ -n "${STORE_CONF}" ]]; then
    printf '\n%s\n' "${STORE_CONF}" >>"${DIR}/etc/glance-api.conf"
fi

# Modelled on devstack's uWSGI config for Glance. Glance reads chunked
# request bodies itself with uwsgi.chunked_read() (each chunk bounded by
# chunked-input-limit); the router must pass them through raw
# (http-raw-body, http-chunked-input), otherwise chunked uploads, as
# glanceclient sends them, fail with 500. The http-* options only concern
# the router and are ignored with http-socket.
cat >"${DIR}/etc/uwsgi.ini" <<EOF
[uwsgi]
${LISTEN}
module = glance.wsgi.api:application
chdir = ${DIR}
env = OS_GLANCE_CONFIG_DIR=${DIR}/etc
master = true
processes = ${PROCESSES}
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
thunder-lock = true
EOF

if ! OS_GLANCE_CONFIG_DIR="${DIR}/etc" "${VENV}/bin/glance-manage" \
    --config-file "${DIR}/etc/glance-api.conf" db_sync \
    >"${DIR}/db_sync.log" 2>&1; then
    tail -n 30 "${DIR}/db_sync.log" >&2 || true
    die "glance-manage db_sync failed (see ${DIR}/db_sync.log)"
fi

# pyuwsgi runs uWSGI inside the venv's python process, so $! is the master.
# Detach stdin/stdout/stderr so a caller capturing our stdout isn't blocked.
OS_GLANCE_CONFIG_DIR="${DIR}/etc" nohup "${VENV}/bin/uwsgi" \
    --ini "${DIR}/etc/uwsgi.ini" \
    </dev/null >"${DIR}/uwsgi.log" 2>&1 &
PID=$!
echo "${PID}" >"${DIR}/uwsgi.pid"

fail() {
    echo "glance_api.sh: $* (log: ${DIR}/uwsgi.log)" >&2
    tail -n 40 "${DIR}/uwsgi.log" >&2 || true
    kill "${PID}" 2>/dev/null || true
    exit 1
}

URL="http://127.0.0.1:${PORT}"
deadline=$((SECONDS + TIMEOUT))
while :; do
    if ! kill -0 "${PID}" 2>/dev/null; then
        fail "uWSGI (pid ${PID}) exited during startup"
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        "${URL}/healthcheck" || true)"
    if [[ "${code}" == "200" ]]; then
        break
    fi
    if ((SECONDS >= deadline)); then
        fail "/healthcheck did not answer 200 within ${TIMEOUT}s (last: ${code})"
    fi
    sleep 0.5
done

echo "${URL}"
