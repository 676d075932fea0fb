#!/usr/bin/env bash
# Cross-implementation compatibility test of the s3 store: upstream OpenStack
# Glance 33.0.0 (glance_store's s3 driver, boto3) and our glance-api on one
# MariaDB database and one S3 bucket, each reading what the other wrote (see the
# docstring of shared_s3.py for the list of checks).
#
# Usage: tests/compat/shared_s3.sh   (no arguments)
#
# Needs GLANCE_TEST_MYSQL_URL, as written to DIR/env by
#   tests/db/servers.sh start DIR
# (a user who may create databases; the test makes a compat_s3_* database and
# drops it), and GLANCE_TEST_S3_ENDPOINT, GLANCE_TEST_S3_ACCESS_KEY,
# GLANCE_TEST_S3_SECRET_KEY and GLANCE_TEST_S3_REGION, as written to DIR/env by
#   tests/s3/rgw.sh start DIR
# (the test makes a glance-compat-* bucket and removes it), cargo and curl.
# Builds glance-api (debug), makes the upstream venv with
# benches/upstream/setup.sh and runs shared_s3.py with its python.
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

[[ -n "${GLANCE_TEST_MYSQL_URL:-}" ]] \
  || fail "setup: GLANCE_TEST_MYSQL_URL is not set: run tests/db/servers.sh start DIR and export the variables of DIR/env"
[[ -n "${GLANCE_TEST_S3_ENDPOINT:-}" ]] \
  || fail "setup: GLANCE_TEST_S3_ENDPOINT is not set: start a RADOS Gateway with tests/s3/rgw.sh start DIR and export the variables of DIR/env"
for var in GLANCE_TEST_S3_ACCESS_KEY GLANCE_TEST_S3_SECRET_KEY; do
  [[ -n "${!var:-}" ]] \
    || fail "setup: ${var} is not set: export every variable of DIR/env of tests/s3/rgw.sh start DIR"
done
command -v curl >/dev/null || fail "setup: curl is not installed (benches/upstream/glance_api.sh needs it)"

cargo build --quiet --bin glance-api || fail "setup: cargo build --bin glance-api failed"
bin_dir="${CARGO_TARGET_DIR:-${root}/target}/debug"
[[ -x "${bin_dir}/glance-api" ]] || fail "setup: no glance-api in ${bin_dir}"

venv="$(benches/upstream/setup.sh)" || fail "setup: benches/upstream/setup.sh failed"
[[ -x "${venv}/bin/python" && -x "${venv}/bin/glance-manage" ]] \
  || fail "setup: ${venv} has no python or glance-manage"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/glance-compat-s3.XXXXXX")"
chmod 755 "${workdir}"

# Its own process group (setsid), so that cleanup can stop everything it
# started, and nothing else; --wait in case setsid has to fork.
setsid --wait "${venv}/bin/python" tests/compat/shared_s3.py \
  --ours "${bin_dir}" \
  --glance-api-sh "${root}/benches/upstream/glance_api.sh" \
  --workdir "${workdir}" &
py_pid=$!
# Under set -e a failed test ends the script here, with the test's status.
wait "${py_pid}"
py_pid=""
