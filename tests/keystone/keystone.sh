#!/usr/bin/env bash
# A throwaway OpenStack Keystone (identity API v3) for the tests of glance-api
# behind Keystone.
#
#   tests/keystone/keystone.sh start DIR   install Keystone in its venv if
#                                          missing, make a new Keystone in DIR
#                                          (or start again the one already
#                                          there), write DIR/env and print it
#                                          on stdout
#   tests/keystone/keystone.sh stop DIR    stop it and wait for it to exit
#                                          (DIR keeps its data and env)
#
# Keystone 30.0.0 from PyPI, in the venv ${CARGO_TARGET_DIR:-<repo>/target}/
# keystone-venv (made once, with python-openstackclient, python-glanceclient,
# openstacksdk, keystoneauth1 and requests for the clients of the tests),
# served by uWSGI (pyuwsgi) on 127.0.0.1 on a free port. Its catalogue is
# SQLite (DIR/keystone.db), its tokens fernet tokens (keys in DIR/fernet-keys,
# credential keys in DIR/credential-keys).
#
# A new Keystone has, besides bootstrap's admin user, project and roles (admin,
# member, reader; admin implies member, member implies reader) and its identity
# endpoints in region RegionOne:
#   project service, user glance (role admin on service): glance-api's user,
#                    which may validate tokens (identity:validate_token);
#   projects alpha and beta, each with users <project>-admin (role admin on the
#                    project) and <project>-member (role member on it).
# Passwords are random, made when DIR is new. Starting again after a stop reuses
# the data and the port (so that a glance-api configured for it finds it again);
# it fails if that port is taken meanwhile.
#
# DIR/env holds (KEY=VALUE lines):
#   KEYSTONE_URL=http://127.0.0.1:PORT/v3, KEYSTONE_PORT, KEYSTONE_REGION,
#   KEYSTONE_ADMIN_USER, KEYSTONE_ADMIN_PROJECT, KEYSTONE_ADMIN_PASSWORD,
#   GLANCE_SERVICE_USER, GLANCE_SERVICE_PASSWORD, GLANCE_SERVICE_PROJECT,
#   ALPHA_PROJECT, ALPHA_PROJECT_ID, ALPHA_ADMIN_USER, ALPHA_ADMIN_PASSWORD,
#   ALPHA_MEMBER_USER, ALPHA_MEMBER_PASSWORD, the same with BETA_,
#   KEYSTONE_VENV (the venv: its bin/ holds openstack, glance and python).
# Users and projects are all in domain Default. The uWSGI log is DIR/uwsgi.log,
# its master's pid DIR/uwsgi.pid. Environment: KEYSTONE_PROCESSES, the number
# of uWSGI workers of a new DIR (default 2).
set -euo pipefail
# shellcheck source=tests/lib/daemons.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/daemons.sh"

readonly KEYSTONE_VERSION="30.0.0"
readonly PINS=(
  "keystone==${KEYSTONE_VERSION}"
  "pyuwsgi==2.0.30.post1"
  "python-openstackclient==10.5.0"
  "python-glanceclient==4.13.0"
  "openstacksdk==4.22.0"
  "keystoneauth1==5.18.1"
  "requests==2.34.2"
)
readonly REGION="RegionOne"
readonly START_TIMEOUT=90
readonly STOP_TIMEOUT=30
# uWSGI worker processes (KEYSTONE_PROCESSES, read when DIR is new). Several
# workers write the one SQLite catalogue concurrently and some of their writes
# then fail (`database is locked`, answered with 500 or a dropped connection);
# callers that make many users and projects at once (Tempest's dynamic
# credentials) use 1.
readonly PROCESSES="${KEYSTONE_PROCESSES:-2}"

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly VENV="${CARGO_TARGET_DIR:-${root}/target}/keystone-venv"

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

log() { printf 'keystone.sh: %s\n' "$*" >&2; }

# --- venv -------------------------------------------------------------------

# Creates the venv if missing and installs the pins unless its stamp already
# lists exactly these.
ensure_venv() {
  local stamp="${VENV}/.pins" wanted have=""
  wanted="$(printf '%s\n' "${PINS[@]}")"
  if [[ ! -x "${VENV}/bin/python" ]] || ! "${VENV}/bin/python" -c '' 2>/dev/null; then
    rm -rf -- "${VENV}"
    "${PYTHON:-python3}" -m venv "${VENV}" >&2
  fi
  [[ -f "${stamp}" ]] && have="$(<"${stamp}")"
  [[ "${have}" == "${wanted}" ]] && return 0
  log "installing ${PINS[*]} into ${VENV}"
  "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "${PINS[@]}" >&2
  printf '%s\n' "${wanted}" >"${stamp}"
}

# --- helpers ----------------------------------------------------------------

random_password() {
  od -An -tx1 -N12 /dev/urandom | tr -d ' \n'
}

# Prints the HTTP status of GET $1 (000 when nothing answers).
http_status() {
  curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 5 "$1" || true
}

manage() {
  "${VENV}/bin/keystone-manage" --config-file "${DIR}/keystone.conf" "$@" \
    >>"${DIR}/keystone-manage.log" 2>&1 \
    || { log "keystone-manage $1 failed"; tail -n 30 "${DIR}/keystone-manage.log" >&2; return 1; }
}

# --- configuration ----------------------------------------------------------

write_config() {
  local port="$1"
  cat >"${DIR}/keystone.conf" <<EOF
[DEFAULT]
use_stderr = true

[database]
connection = sqlite:///${DIR}/keystone.db

[token]
provider = fernet

[fernet_tokens]
key_repository = ${DIR}/fernet-keys

[fernet_receipts]
key_repository = ${DIR}/fernet-keys

[credential]
key_repository = ${DIR}/credential-keys

[identity]
# Scratch users: cheap hashes keep each password check fast.
password_hash_rounds = 4
EOF
  # Modelled on devstack's uWSGI config for Keystone.
  cat >"${DIR}/uwsgi.ini" <<EOF
[uwsgi]
http-socket = 127.0.0.1:${port}
module = keystone.wsgi.api:application
chdir = ${DIR}
pidfile = ${DIR}/uwsgi.pid
master = true
processes = ${PROCESSES}
threads = 1
enable-threads = true
lazy-apps = true
die-on-term = true
need-app = true
buffer-size = 65535
add-header = Connection: close
EOF
}

# Makes the catalogue, the keys and bootstrap's admin, roles and endpoints.
initialise() {
  local port="$1" admin_password="$2" url="http://127.0.0.1:$1/v3" who group
  who="$(id -un)"
  group="$(id -gn)"
  mkdir -p "${DIR}/fernet-keys" "${DIR}/credential-keys"
  manage db_sync
  manage fernet_setup --keystone-user "${who}" --keystone-group "${group}"
  manage credential_setup --keystone-user "${who}" --keystone-group "${group}"
  manage bootstrap --bootstrap-password "${admin_password}" \
    --bootstrap-region-id "${REGION}" \
    --bootstrap-public-url "${url}" --bootstrap-internal-url "${url}" \
    --bootstrap-admin-url "${url}"
  log "catalogue made on port ${port}"
}

# Makes the projects, users and role assignments through the API, and prints
# the ids of the projects alpha and beta as ALPHA_PROJECT_ID=... lines.
provision() {
  KS_URL="${KEYSTONE_URL}" KS_ADMIN_PASSWORD="${KEYSTONE_ADMIN_PASSWORD}" \
    KS_GLANCE_PASSWORD="${GLANCE_SERVICE_PASSWORD}" \
    KS_USERS="alpha-admin:admin:${ALPHA_ADMIN_PASSWORD} alpha-member:member:${ALPHA_MEMBER_PASSWORD} beta-admin:admin:${BETA_ADMIN_PASSWORD} beta-member:member:${BETA_MEMBER_PASSWORD}" \
    "${VENV}/bin/python" - <<'EOF'
import os

from keystoneauth1 import session
from keystoneauth1.identity import v3

url = os.environ["KS_URL"]
auth = v3.Password(auth_url=url, username="admin", password=os.environ["KS_ADMIN_PASSWORD"],
                   project_name="admin", user_domain_id="default", project_domain_id="default")
s = session.Session(auth=auth)
s.session.trust_env = False
kw = {"endpoint_filter": {"interface": "public", "service_type": "identity"}}


def one(path, key, name):
    found = s.get(f"{path}?name={name}", **kw).json()[key]
    return found[0]["id"] if found else None


def project(name):
    return one("/projects", "projects", name) or s.post(
        "/projects", json={"project": {"name": name, "domain_id": "default"}}, **kw
    ).json()["project"]["id"]


def user(name, password, project_id):
    return one("/users", "users", name) or s.post(
        "/users", json={"user": {"name": name, "password": password, "domain_id": "default",
                                 "default_project_id": project_id}}, **kw
    ).json()["user"]["id"]


roles = {r["name"]: r["id"] for r in s.get("/roles", **kw).json()["roles"]}


def grant(project_id, user_id, role):
    s.put(f"/projects/{project_id}/users/{user_id}/roles/{roles[role]}", **kw)


service = project("service")
grant(service, user("glance", os.environ["KS_GLANCE_PASSWORD"], service), "admin")
ids = {}
for spec in os.environ["KS_USERS"].split():
    name, role, password = spec.split(":", 2)
    pname = name.split("-", 1)[0]
    if pname not in ids:
        ids[pname] = project(pname)
    grant(ids[pname], user(name, password, ids[pname]), role)
for pname, pid in ids.items():
    print(f"{pname.upper()}_PROJECT_ID={pid}")
EOF
}

write_env() {
  local tmp="${DIR}/env.tmp"
  cat >"${tmp}" <<EOF
KEYSTONE_URL=${KEYSTONE_URL}
KEYSTONE_PORT=${KEYSTONE_PORT}
KEYSTONE_REGION=${REGION}
KEYSTONE_ADMIN_USER=admin
KEYSTONE_ADMIN_PROJECT=admin
KEYSTONE_ADMIN_PASSWORD=${KEYSTONE_ADMIN_PASSWORD}
GLANCE_SERVICE_USER=glance
GLANCE_SERVICE_PASSWORD=${GLANCE_SERVICE_PASSWORD}
GLANCE_SERVICE_PROJECT=service
ALPHA_PROJECT=alpha
ALPHA_PROJECT_ID=${ALPHA_PROJECT_ID}
ALPHA_ADMIN_USER=alpha-admin
ALPHA_ADMIN_PASSWORD=${ALPHA_ADMIN_PASSWORD}
ALPHA_MEMBER_USER=alpha-member
ALPHA_MEMBER_PASSWORD=${ALPHA_MEMBER_PASSWORD}
BETA_PROJECT=beta
BETA_PROJECT_ID=${BETA_PROJECT_ID}
BETA_ADMIN_USER=beta-admin
BETA_ADMIN_PASSWORD=${BETA_ADMIN_PASSWORD}
BETA_MEMBER_USER=beta-member
BETA_MEMBER_PASSWORD=${BETA_MEMBER_PASSWORD}
KEYSTONE_VENV=${VENV}
EOF
  chmod 600 "${tmp}"
  mv -f -- "${tmp}" "${DIR}/env"
}

# --- start / stop -----------------------------------------------------------

launcher=""

start_uwsgi() {
  rm -f "${DIR}/uwsgi.pid"
  # Its own session, so no signal sent to the caller's process group reaches
  # it. pyuwsgi runs uWSGI in the venv's python: the launcher is the master,
  # and its python's environment is the launcher's (uWSGI's `env` comes too
  # late for os.environ).
  OS_KEYSTONE_CONFIG_DIR="${DIR}" setsid "${VENV}/bin/uwsgi" --ini "${DIR}/uwsgi.ini" \
    </dev/null >>"${DIR}/uwsgi.log" 2>&1 &
  launcher=$!
  echo "${launcher}" >"${DIR}/uwsgi.pid"
}

wait_ready() {
  local url="$1" deadline=$((SECONDS + START_TIMEOUT)) code
  while :; do
    code="$(http_status "${url}")"
    [[ "${code}" == 200 ]] && return 0
    if ! kill -0 "${launcher}" 2>/dev/null; then
      log "uWSGI exited"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "GET ${url} did not answer 200 in ${START_TIMEOUT}s (last: ${code})"
      return 1
    fi
    sleep 0.2
  done
}

stop_keystone() {
  local pid
  for pid in "$(live_pid "${DIR}/uwsgi.pid" || true)" "${launcher}"; do
    [[ -n "${pid}" ]] || continue
    # die-on-term: SIGTERM makes the master stop its workers and exit.
    kill -TERM "${pid}" 2>/dev/null || true
    wait_gone "${pid}"
  done
}

started_ok=0
on_start_exit() {
  ((started_ok)) && return 0
  log "start failed"
  if [[ -s "${DIR}/uwsgi.log" ]]; then
    echo "--- tail of ${DIR}/uwsgi.log" >&2
    tail -n 30 "${DIR}/uwsgi.log" >&2
  fi
  stop_keystone
}

cmd_start() {
  local t0=${SECONDS} fresh=0 ids
  if live_pid "${DIR}/uwsgi.pid" >/dev/null; then
    log "Keystone already running in ${DIR}; stop it first"
    return 1
  fi
  command -v curl >/dev/null || { log "curl is required"; return 1; }
  mkdir -p "${DIR}"
  if [[ -s "${DIR}/keystone.db" ]]; then
    [[ -s "${DIR}/env" ]] \
      || { log "${DIR} holds a Keystone without env (a failed start?): use a new DIR"; return 1; }
    set -a
    # shellcheck source=/dev/null
    source "${DIR}/env"
    set +a
    [[ "${KEYSTONE_VENV}" == "${VENV}" ]] \
      || { log "${DIR} was made with the venv ${KEYSTONE_VENV}, not ${VENV}"; return 1; }
    if [[ "$(http_status "${KEYSTONE_URL}")" != 000 ]]; then
      log "something already answers on port ${KEYSTONE_PORT}"
      return 1
    fi
  else
    fresh=1
    read -r KEYSTONE_PORT _ < <(free_ports)
    KEYSTONE_URL="http://127.0.0.1:${KEYSTONE_PORT}/v3"
    KEYSTONE_ADMIN_PASSWORD="$(random_password)"
    GLANCE_SERVICE_PASSWORD="$(random_password)"
    ALPHA_ADMIN_PASSWORD="$(random_password)"
    ALPHA_MEMBER_PASSWORD="$(random_password)"
    BETA_ADMIN_PASSWORD="$(random_password)"
    BETA_MEMBER_PASSWORD="$(random_password)"
  fi
  ensure_venv
  trap on_start_exit EXIT
  if ((fresh)); then
    write_config "${KEYSTONE_PORT}"
    initialise "${KEYSTONE_PORT}" "${KEYSTONE_ADMIN_PASSWORD}"
  fi
  start_uwsgi
  wait_ready "${KEYSTONE_URL}"
  if ((fresh)); then
    ids="$(provision)" || { log "making the projects and users failed"; return 1; }
    ALPHA_PROJECT_ID="$(sed -n 's/^ALPHA_PROJECT_ID=//p' <<<"${ids}")"
    BETA_PROJECT_ID="$(sed -n 's/^BETA_PROJECT_ID=//p' <<<"${ids}")"
    write_env
  fi
  started_ok=1
  log "Keystone up on ${KEYSTONE_URL} in $((SECONDS - t0))s"
  cat "${DIR}/env"
}

cmd_stop() {
  stop_keystone
  rm -f "${DIR}/uwsgi.pid"
}

# --- main -------------------------------------------------------------------

[[ $# == 2 ]] || usage
work_dir "$2"

case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) usage ;;
esac
