#!/usr/bin/env bash
# Throwaway MariaDB and PostgreSQL servers for the database tests.
#
#   tests/db/servers.sh start DIR   install the servers if missing, start both
#                                   (data, sockets, logs and pid files in DIR),
#                                   write DIR/env and print it on stdout
#   tests/db/servers.sh stop DIR    stop both and wait for them to exit
#
# Each server runs as an unprivileged user (the system user `glancetest`, made
# on demand, when run as root; the current user otherwise), listens only on
# 127.0.0.1 on a free port and has a database `glance` owned by the user
# `glance`, who may also create and drop other databases (one per test).
# Durability is traded for speed (no fsync): the data is scratch.
#
# DIR/env holds:
#   GLANCE_TEST_MYSQL_URL=mysql+pymysql://glance:PW@127.0.0.1:PORT/glance?charset=utf8
#   GLANCE_TEST_POSTGRES_URL=postgresql+psycopg2://glance:PW@127.0.0.1:PORT/glance
#   GLANCE_TEST_MYSQL_SOCKET=DIR/mariadb/mysqld.sock
# Starting again after a stop reuses the data directories (on new ports).
set -euo pipefail
# shellcheck source=tests/lib/daemons.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/daemons.sh"

readonly DB_NAME="glance"
readonly DB_USER="glance"
readonly DB_PASSWORD="glance-secret-pw"
readonly SYSTEM_USER="glancetest"
readonly START_TIMEOUT=60
readonly STOP_TIMEOUT=60

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

log() { printf 'servers.sh: %s\n' "$*" >&2; }

# --- who runs the servers -------------------------------------------------

if [[ "$(id -u)" == 0 ]]; then
  run_user="${SYSTEM_USER}"
else
  run_user="$(id -un)"
fi

ensure_run_user() {
  [[ "$(id -u)" == 0 ]] || return 0
  id -u "${run_user}" >/dev/null 2>&1 && return 0
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "${run_user}"
}

# Prefix that runs a command as the unprivileged server user.
if [[ "$(id -u)" == 0 ]]; then
  as_user_cmd=(runuser -u "${run_user}" --)
else
  as_user_cmd=()
fi
as_user() { "${as_user_cmd[@]}" "$@"; }

# --- binaries ---------------------------------------------------------------

mariadbd_bin=""
mariadb_launcher=""
install_db_bin=""
mariadb_bin=""
pg_bindir=""

find_binaries() {
  local c
  mariadbd_bin=""
  install_db_bin=""
  mariadb_bin=""
  pg_bindir=""
  for c in /usr/sbin/mariadbd /usr/sbin/mysqld "$(command -v mariadbd || true)"; do
    [[ -n "${c}" && -x "${c}" ]] && { mariadbd_bin="${c}"; break; }
  done
  for c in mariadb-install-db mysql_install_db; do
    command -v "${c}" >/dev/null && { install_db_bin="$(command -v "${c}")"; break; }
  done
  for c in mariadb mysql; do
    command -v "${c}" >/dev/null && { mariadb_bin="$(command -v "${c}")"; break; }
  done
  # Debian's versioned directory first (the newest major version); a
  # PostgreSQL of another origin only if there is none.
  c="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null \
    | sort -V | tail -n 1)"
  if [[ -n "${c}" && -x "${c}/initdb" && -x "${c}/pg_ctl" ]]; then
    pg_bindir="${c}"
  elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    pg_bindir="$(dirname "$(command -v initdb)")"
  fi
  [[ -n "${mariadbd_bin}" && -n "${install_db_bin}" && -n "${mariadb_bin}" \
    && -n "${pg_bindir}" ]] && command -v psql >/dev/null
}

ensure_installed() {
  find_binaries && return 0
  log "installing mariadb-server and postgresql"
  apt_install mariadb-server postgresql
  find_binaries || { log "server binaries still missing after install"; return 1; }
}

# --- helpers ----------------------------------------------------------------


# --- MariaDB ----------------------------------------------------------------

mariadb_server_opts() {
  local data="$1"
  printf '%s\n' \
    "--datadir=${data}" \
    "--skip-name-resolve" \
    "--character-set-server=utf8mb4" \
    "--collation-server=utf8mb4_general_ci" \
    "--innodb-buffer-pool-size=128M" \
    "--innodb-log-file-size=32M" \
    "--innodb-flush-log-at-trx-commit=0" \
    "--innodb-doublewrite=0" \
    "--innodb-flush-method=nosync" \
    "--max-connections=500"
}

mariadb_sql() {
  "${mariadb_bin}" --no-defaults --protocol=socket --socket="${DIR}/mariadb/mysqld.sock" \
    -uroot --batch --skip-column-names "$@"
}

start_mariadb() {
  local port="$1" data="${DIR}/mariadb" opts
  mapfile -t opts < <(mariadb_server_opts "${data}")
  if [[ ! -d "${data}/mysql" ]]; then
    as_user mkdir -p "${data}"
    as_user "${install_db_bin}" --no-defaults "${opts[@]}" \
      --auth-root-authentication-method=normal --skip-test-db \
      >"${DIR}/mariadb-install.log" 2>&1 \
      || { log "mariadb-install-db failed"; tail -n 40 "${DIR}/mariadb-install.log" >&2; return 1; }
  fi
  rm -f "${data}/mysqld.sock" "${data}/mysqld.pid"
  # Its own session, so no signal sent to the caller's process group reaches it.
  setsid "${as_user_cmd[@]}" "${mariadbd_bin}" --no-defaults "${opts[@]}" \
    --port="${port}" --bind-address=127.0.0.1 \
    --socket="${data}/mysqld.sock" --pid-file="${data}/mysqld.pid" \
    --log-error="${data}/mariadb.err" \
    </dev/null >>"${data}/mariadb.out" 2>&1 &
  mariadb_launcher=$!
}

setup_mariadb() {
  local port="$1"
  # Anonymous accounts would shadow glance@'%' on the socket; glance@localhost
  # is the socket's account.
  mariadb_sql <<EOF
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS \`${DB_NAME}\`;
CREATE USER IF NOT EXISTS '${DB_USER}'@'%' IDENTIFIED BY '${DB_PASSWORD}';
CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '${DB_USER}'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '${DB_USER}'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
EOF
  "${mariadb_bin}" --no-defaults -h127.0.0.1 -P"${port}" -u"${DB_USER}" \
    -p"${DB_PASSWORD}" "${DB_NAME}" -e 'SELECT 1' >/dev/null
}

mariadb_ready() {
  mariadb_sql --connect-timeout=2 --execute='SELECT 1' >/dev/null 2>&1
}

# --- PostgreSQL -------------------------------------------------------------

start_postgres() {
  local port="$1" data="${DIR}/postgresql"
  if [[ ! -s "${data}/PG_VERSION" ]]; then
    as_user "${pg_bindir}/initdb" --pgdata="${data}" --username=postgres \
      --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale \
      --no-sync >"${DIR}/postgresql-initdb.log" 2>&1 \
      || { log "initdb failed"; tail -n 40 "${DIR}/postgresql-initdb.log" >&2; return 1; }
    echo "include_if_exists = 'glance-test.conf'" | as_user tee -a "${data}/postgresql.conf" >/dev/null
  fi
  as_user tee "${data}/glance-test.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = ${port}
unix_socket_directories = '${data}'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
  # pg_ctl starts the server in the background and returns.
  as_user "${pg_bindir}/pg_ctl" --pgdata="${data}" --log="${data}/postgresql.log" \
    --silent start </dev/null >/dev/null 2>&1
}

psql_admin() {
  psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --host="${DIR}/postgresql" \
    --port="$1" --username=postgres --dbname=postgres "${@:2}"
}

setup_postgres() {
  local port="$1"
  psql_admin "${port}" >/dev/null <<EOF
SELECT 'CREATE ROLE ${DB_USER}' WHERE NOT EXISTS
  (SELECT 1 FROM pg_roles WHERE rolname = '${DB_USER}')\gexec
ALTER ROLE ${DB_USER} WITH LOGIN CREATEDB PASSWORD '${DB_PASSWORD}';
SELECT 'CREATE DATABASE ${DB_NAME} OWNER ${DB_USER}' WHERE NOT EXISTS
  (SELECT 1 FROM pg_database WHERE datname = '${DB_NAME}')\gexec
EOF
  PGPASSWORD="${DB_PASSWORD}" psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 \
    --host=127.0.0.1 --port="${port}" --username="${DB_USER}" --dbname="${DB_NAME}" \
    --command='SELECT 1' >/dev/null
}

postgres_ready() {
  psql_admin "$1" --command='SELECT 1' >/dev/null 2>&1
}

# --- start / stop -----------------------------------------------------------

print_logs() {
  local f
  for f in "${DIR}/mariadb/mariadb.err" "${DIR}/mariadb/mariadb.out" \
    "${DIR}/postgresql/postgresql.log"; do
    [[ -s "${f}" ]] || continue
    echo "--- tail of ${f}" >&2
    tail -n 30 "${f}" >&2
  done
}

stop_servers() {
  local pid
  # SIGTERM: MariaDB's normal shutdown; SIGINT: PostgreSQL's fast shutdown.
  if pid="$(live_pid "${DIR}/mariadb/mysqld.pid")"; then
    kill -TERM "${pid}" 2>/dev/null || true
    wait_gone "${pid}"
  fi
  if pid="$(live_pid "${DIR}/postgresql/postmaster.pid")"; then
    kill -INT "${pid}" 2>/dev/null || true
    wait_gone "${pid}"
  fi
  rm -f "${DIR}/env"
}

started_ok=0
on_start_exit() {
  ((started_ok)) && return 0
  log "start failed"
  print_logs
  stop_servers
}

cmd_start() {
  local ports mysql_port pg_port deadline my_up=0 pg_up=0 t0=${SECONDS}
  if live_pid "${DIR}/mariadb/mysqld.pid" >/dev/null \
    || live_pid "${DIR}/postgresql/postmaster.pid" >/dev/null; then
    log "servers already running in ${DIR}; stop them first"
    return 1
  fi
  ensure_installed
  ensure_run_user
  trap on_start_exit EXIT
  mkdir -p "${DIR}/mariadb" "${DIR}/postgresql"
  chmod 755 "${DIR}"
  chown "${run_user}:" "${DIR}/mariadb" "${DIR}/postgresql" 2>/dev/null || true
  chmod 700 "${DIR}/mariadb" "${DIR}/postgresql"
  if ! as_user test -w "${DIR}/mariadb" -a -w "${DIR}/postgresql"; then
    log "${DIR} is not reachable by user ${run_user} (check its parents' permissions)"
    return 1
  fi

  read -r mysql_port pg_port < <(free_ports)
  start_mariadb "${mysql_port}"
  start_postgres "${pg_port}"

  deadline=$((t0 + START_TIMEOUT))
  while ((!my_up || !pg_up)); do
    if ((!my_up)) && mariadb_ready; then my_up=1; fi
    if ((!my_up)) && ! kill -0 "${mariadb_launcher}" 2>/dev/null; then
      log "mariadbd exited"
      return 1
    fi
    if ((!pg_up)) && postgres_ready "${pg_port}"; then pg_up=1; fi
    ((my_up && pg_up)) && break
    if ((SECONDS >= deadline)); then
      log "timed out after ${START_TIMEOUT}s (mariadb up: ${my_up}, postgresql up: ${pg_up})"
      return 1
    fi
    sleep 0.2
  done
  setup_mariadb "${mysql_port}"
  setup_postgres "${pg_port}"

  cat >"${DIR}/env" <<EOF
GLANCE_TEST_MYSQL_URL=mysql+pymysql://${DB_USER}:${DB_PASSWORD}@127.0.0.1:${mysql_port}/${DB_NAME}?charset=utf8
GLANCE_TEST_POSTGRES_URL=postgresql+psycopg2://${DB_USER}:${DB_PASSWORD}@127.0.0.1:${pg_port}/${DB_NAME}
GLANCE_TEST_MYSQL_SOCKET=${DIR}/mariadb/mysqld.sock
EOF
  chmod 644 "${DIR}/env"
  started_ok=1
  log "both servers up in $((SECONDS - t0))s"
  cat "${DIR}/env"
}

cmd_stop() {
  stop_servers
}

# --- main -------------------------------------------------------------------

[[ $# == 2 ]] || usage
# The socket paths must stay within the 107-byte limit of unix sockets.
work_dir "$2"
if ((${#DIR} > 80)); then
  log "DIR is too long for unix socket paths (max 80 characters): ${DIR}"
  exit 2
fi

case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) usage ;;
esac
