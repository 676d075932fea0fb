#!/usr/bin/env bash
# Cross-implementation compatibility test: our glance-manage and glance-api
# against upstream OpenStack Glance 33.0.0 on one database (MariaDB, PostgreSQL,
# SQLite): each one's schema is current for the other and identical, and both
# glance-apis share one catalogue and one store directory (see the docstring of
# shared_database.py for the list of checks).
#
# Usage: tests/compat/shared_database.sh   (no arguments)
#
# Needs GLANCE_TEST_MYSQL_URL and GLANCE_TEST_POSTGRES_URL, as written to DIR/env by
#   tests/db/servers.sh start DIR
# (a user who may create databases; the test makes compat_* databases and drops
# them), cargo, curl, mariadb-dump (or mysqldump) and pg_dump. Builds glance-api
# and glance-manage (debug), makes the upstream venv with
# benches/upstream/setup.sh and runs shared_database.py with its python.
#
# Prints `ok: CHECK` for each passed check and `FAIL: CHECK` with what was seen
# for each failed one; exits 1 if any failed. Every process it starts is stopped
# on exit, also on failure or interruption. GLANCE_COMPAT_KEEP=1 keeps the work
# directory (configurations and logs of both glance-apis).
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"

# shellcheck source=tests/compat/common.sh
source "${root}/tests/compat/common.sh"

for var in GLANCE_TEST_MYSQL_URL GLANCE_TEST_POSTGRES_URL; do
  [[ -n "${!var:-}" ]] \
    || fail "setup: ${var} is not set: run tests/db/servers.sh start DIR and export the variables of DIR/env"
done

mysqldump_bin=""
for c in mariadb-dump mysqldump; do
  if command -v "${c}" >/dev/null; then
    mysqldump_bin="$(command -v "${c}")"
    break
  fi
done
[[ -n "${mysqldump_bin}" ]] || fail "setup: neither mariadb-dump nor mysqldump is installed"
pg_dump_bin="$(command -v pg_dump || true)"
[[ -n "${pg_dump_bin}" ]] || fail "setup: pg_dump is not installed"
command -v curl >/dev/null || fail "setup: curl is not installed (benches/upstream/glance_api.sh needs it)"

cargo build --quiet --bin glance-api --bin glance-manage \
  || fail "setup: cargo build --bin glance-api --bin glance-manage failed"
bin_dir="${CARGO_TARGET_DIR:-${root}/target}/debug"
for b in glance-api glance-manage; do
  [[ -x "${bin_dir}/${b}" ]] || fail "setup: no ${b} in ${bin_dir}"
done

venv="$(benches/upstream/setup.sh)" || fail "setup: benches/upstream/setup.sh failed"
[[ -x "${venv}/bin/python" && -x "${venv}/bin/glance-manage" ]] \
  || fail "setup: ${venv} has no python or glance-manage"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/glance-compat.XXXXXX")"
chmod 755 "${workdir}"

# Its own process group (setsid), so that cleanup can stop everything it
# started, and nothing else; --wait in case setsid has to fork.
setsid --wait "${venv}/bin/python" tests/compat/shared_database.py \
  --ours "${bin_dir}" \
  --venv "${venv}" \
  --glance-api-sh "${root}/benches/upstream/glance_api.sh" \
  --workdir "${workdir}" \
  --mysqldump "${mysqldump_bin}" \
  --pg-dump "${pg_dump_bin}" &
py_pid=$!
# Under set -e a failed test ends the script here, with the test's status.
wait "${py_pid}"
py_pid=""
