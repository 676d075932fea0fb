#!/usr/bin/env bash
# Upstream OpenStack Glance 33.0.0 and our glance-api behind one Keystone: the
# same scenarios (no or bogus token, private and shared images, the cache API,
# a revoked token, Keystone stopped), through python-glanceclient,
# python-openstackclient, openstacksdk and raw HTTP, must get the same answers
# from both (see the docstring of compare.py).
#
# Usage: tests/keystone/compare.sh   (no arguments)
#
# Starts a Keystone of its own (tests/keystone/keystone.sh, whose venv also
# holds the clients and runs compare.py), makes the upstream venv with
# benches/upstream/setup.sh and builds glance-api (debug).
#
# Environment: GLANCE_IMPLS, the implementations to run (default `upstream
# ours`; one alone checks only the expected outcomes), GLANCE_COMPAT_KEEP=1
# keeps the work directory (configurations and logs).
#
# Prints `ok: STEP` for each passed check and `FAIL: STEP` with what was seen for
# each failed one, then a table of every step's outcome by implementation;
# exits 1 if any failed. Every process it starts is stopped on exit, also on
# failure or interruption.
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"

# shellcheck source=tests/compat/common.sh
source "${root}/tests/compat/common.sh"

keystone_dir=""

# Stops Keystone (in a session of its own: out of reach of the process-group
# backstop), then common.sh's cleanup, with the exit status kept.
stop_all() {
  local status=$?
  if [[ -n "${keystone_dir}" ]]; then
    tests/keystone/keystone.sh stop "${keystone_dir}" >/dev/null 2>&1 || true
  fi
  set +e
  (exit "${status}")
  cleanup
}
trap stop_all EXIT

impls="${GLANCE_IMPLS:-upstream ours}"
read -r -a impl_list <<<"${impls}"
args=()
for impl in "${impl_list[@]}"; do
  case "${impl}" in
    upstream)
      command -v curl >/dev/null || fail "setup: curl is not installed"
      venv="$(benches/upstream/setup.sh)" || fail "setup: benches/upstream/setup.sh failed"
      [[ -x "${venv}/bin/uwsgi" && -x "${venv}/bin/glance-manage" ]] \
        || fail "setup: ${venv} has no uwsgi or glance-manage"
      args+=(--upstream-venv "${venv}")
      ;;
    ours)
      cargo build --quiet --bin glance-api --bin glance-cache-manage \
        || fail "setup: cargo build --bin glance-api --bin glance-cache-manage failed"
      bin="${CARGO_TARGET_DIR:-${root}/target}/debug/glance-api"
      [[ -x "${bin}" ]] || fail "setup: no ${bin}"
      args+=(--ours "${bin}")
      ;;
    *) fail "setup: GLANCE_IMPLS holds '${impl}': use upstream and/or ours" ;;
  esac
done
[[ ${#args[@]} -gt 0 ]] || fail "setup: GLANCE_IMPLS is empty"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/glance-keystone.XXXXXX")"
chmod 755 "${workdir}"
keystone_dir="${workdir}/keystone"
tests/keystone/keystone.sh start "${keystone_dir}" >/dev/null \
  || fail "setup: tests/keystone/keystone.sh start failed"
ks_venv="$(sed -n 's/^KEYSTONE_VENV=//p' "${keystone_dir}/env")"
[[ -x "${ks_venv}/bin/python" ]] || fail "setup: no python in the Keystone venv ${ks_venv}"

# Its own process group (setsid), so that cleanup can stop everything it
# started, and nothing else; --wait in case setsid has to fork.
setsid --wait "${ks_venv}/bin/python" tests/keystone/compare.py \
  --impls "${impls}" \
  "${args[@]}" \
  --keystone-sh "${root}/tests/keystone/keystone.sh" \
  --keystone-dir "${keystone_dir}" \
  --workdir "${workdir}" &
py_pid=$!
# Under set -e a failed test ends the script here, with the test's status.
wait "${py_pid}"
py_pid=""
