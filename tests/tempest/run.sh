#!/usr/bin/env bash
# OpenStack Tempest's image API tests (tempest.api.image, Tempest 47.0.0) against
# upstream OpenStack Glance 33.0.0 and our glance-api, behind one real Keystone,
# with one configuration: per-test outcomes compared (see the docstrings of
# tests/tempest/harness.py and tests/tempest/glance_conf.py).
#
# Usage: tests/tempest/run.sh   (no arguments)
#
# Installs Tempest and its pinned dependencies (tests/tempest/requirements.txt)
# into the venv ${CARGO_TARGET_DIR:-<repo>/target}/tempest-venv when they are
# missing, makes the upstream venv with benches/upstream/setup.sh (upstream's
# metadata definitions, loaded into both catalogues, come from it), builds
# glance-api and glance-manage (debug) unless GLANCE_API_BIN is set, and starts
# a Keystone of its own (tests/keystone/keystone.sh, one uWSGI worker). Then,
# for each implementation in turn, a glance-api with a fresh SQLite database
# (its own glance-manage db_sync and db_load_metadefs) and fresh stores, the
# catalogue's image endpoints pointed at it, and `tempest run` (dynamic
# credentials made with Keystone's admin, at most 2 workers).
#
# Prints the passed/failed/skipped counts per implementation, every failed
# test with the last lines of its error, the tests whose outcome differs, and
# the time each phase took. Exits 1 if a test that passes on upstream fails or
# is skipped on ours and is not listed in tests/tempest/known_gaps.txt, or if a
# test listed there passes on ours (remove it from the list then).
#
# Environment:
#   GLANCE_IMPLS                 the implementations (default `upstream ours`);
#                                with ours alone only the known gaps are
#                                checked (none may pass), with upstream alone
#                                nothing is compared
#   GLANCE_TEMPEST_REGEX         the tests to run (default '^tempest\.api\.image')
#   GLANCE_TEMPEST_CONCURRENCY   Tempest workers, 1 or 2 (default 2)
#   GLANCE_API_BIN               our glance-api binary; its glance-manage is the
#                                one beside it unless GLANCE_MANAGE_BIN names
#                                one (default: `cargo build` and target/debug)
#   GLANCE_TEMPEST_KEEP=1        keep the work directory (configurations, logs,
#                                tempest.log, subunit streams, outcomes.json)
#
# Every process it starts is stopped on exit, also on failure or interruption.
# Only loopback addresses are used: Tempest's http_image is served on
# 127.0.0.1 by the harness itself.
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"

readonly TARGET="${CARGO_TARGET_DIR:-${root}/target}"
readonly VENV="${TARGET}/tempest-venv"
readonly REQUIREMENTS="${root}/tests/tempest/requirements.txt"

workdir=""
keystone_dir=""
py_pid=""
t_start=${SECONDS}

fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

# Prints how long the phase started at $2 (a value of SECONDS) took.
took() {
  printf 'time: %-32s %4ds\n' "$1" "$((SECONDS - $2))"
}

# Stops the harness (and, as a backstop, its process group: the glance-apis
# and Tempest's workers), then Keystone (in a session of its own), removes the
# work directory unless GLANCE_TEMPEST_KEEP=1; keeps the exit status.
cleanup() {
  local status=$? pgid
  trap - EXIT INT TERM
  if [[ -n "${py_pid}" ]] && kill -0 "${py_pid}" 2>/dev/null; then
    kill -TERM "${py_pid}" 2>/dev/null || true
    for _ in $(seq 1 400); do
      kill -0 "${py_pid}" 2>/dev/null || break
      sleep 0.1
    done
  fi
  if [[ -n "${workdir}" && -s "${workdir}/pgid" ]]; then
    pgid="$(head -n 1 "${workdir}/pgid")"
    if [[ "${pgid}" =~ ^[0-9]+$ && "${pgid}" != "$(ps -o pgid= -p $$ | tr -d ' ')" ]] \
      && kill -0 -- "-${pgid}" 2>/dev/null; then
      kill -TERM -- "-${pgid}" 2>/dev/null || true
      sleep 2
      kill -KILL -- "-${pgid}" 2>/dev/null || true
    fi
  fi
  if [[ -n "${keystone_dir}" ]]; then
    tests/keystone/keystone.sh stop "${keystone_dir}" >/dev/null 2>&1 || true
  fi
  if [[ -n "${workdir}" ]]; then
    if [[ "${GLANCE_TEMPEST_KEEP:-}" == 1 ]]; then
      echo "work directory kept: ${workdir}" >&2
    else
      rm -rf -- "${workdir}"
    fi
  fi
  took "total" "${t_start}"
  exit "${status}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Makes the Tempest venv if missing and installs the pins unless its stamp
# already holds exactly these.
ensure_tempest_venv() {
  local stamp="${VENV}/.requirements"
  if [[ ! -x "${VENV}/bin/python" ]] || ! "${VENV}/bin/python" -c '' 2>/dev/null; then
    rm -rf -- "${VENV}"
    "${PYTHON:-python3}" -m venv "${VENV}"
  fi
  if [[ -f "${stamp}" ]] && cmp -s "${stamp}" "${REQUIREMENTS}" \
    && [[ -x "${VENV}/bin/tempest" && -x "${VENV}/bin/stestr" ]]; then
    return 0
  fi
  echo "installing Tempest (${REQUIREMENTS}) into ${VENV}" >&2
  "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "${REQUIREMENTS}"
  cp -- "${REQUIREMENTS}" "${stamp}"
}

impls="${GLANCE_IMPLS:-upstream ours}"
regex="${GLANCE_TEMPEST_REGEX:-^tempest\.api\.image}"
concurrency="${GLANCE_TEMPEST_CONCURRENCY:-2}"
[[ "${concurrency}" == 1 || "${concurrency}" == 2 ]] \
  || fail "setup: GLANCE_TEMPEST_CONCURRENCY must be 1 or 2, not '${concurrency}'"
command -v curl >/dev/null || fail "setup: curl is not installed"

t=${SECONDS}
ensure_tempest_venv || fail "setup: installing Tempest into ${VENV} failed"
took "Tempest venv" "${t}"

# The upstream venv also gives both implementations upstream's metadata
# definitions (etc/glance/metadefs), so it is made even for ours alone.
t=${SECONDS}
venv="$(benches/upstream/setup.sh)" || fail "setup: benches/upstream/setup.sh failed"
[[ -d "${venv}/etc/glance/metadefs" ]] || fail "setup: ${venv} has no etc/glance/metadefs"
args=(--metadefs-dir "${venv}/etc/glance/metadefs")
took "upstream venv" "${t}"

read -r -a impl_list <<<"${impls}"
for impl in "${impl_list[@]}"; do
  case "${impl}" in
    upstream)
      [[ -x "${venv}/bin/uwsgi" && -x "${venv}/bin/glance-manage" ]] \
        || fail "setup: ${venv} has no uwsgi or glance-manage"
      args+=(--upstream-venv "${venv}")
      ;;
    ours)
      t=${SECONDS}
      if [[ -n "${GLANCE_API_BIN:-}" ]]; then
        bin="${GLANCE_API_BIN}"
        manage="${GLANCE_MANAGE_BIN:-$(dirname -- "${bin}")/glance-manage}"
      else
        cargo build --quiet --bin glance-api --bin glance-manage \
          || fail "setup: cargo build --bin glance-api --bin glance-manage failed"
        bin="${TARGET}/debug/glance-api"
        manage="${TARGET}/debug/glance-manage"
      fi
      [[ -x "${bin}" ]] || fail "setup: no glance-api at ${bin}"
      [[ -x "${manage}" ]] || fail "setup: no glance-manage at ${manage}"
      args+=(--ours "${bin}" --ours-manage "${manage}")
      took "glance-api build" "${t}"
      ;;
    *) fail "setup: GLANCE_IMPLS holds '${impl}': use upstream and/or ours" ;;
  esac
done
[[ ${#impl_list[@]} -gt 0 ]] || fail "setup: GLANCE_IMPLS is empty"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/glance-tempest.XXXXXX")"
chmod 755 "${workdir}"
keystone_dir="${workdir}/keystone"
t=${SECONDS}
KEYSTONE_PROCESSES=1 tests/keystone/keystone.sh start "${keystone_dir}" >/dev/null \
  || fail "setup: tests/keystone/keystone.sh start failed"
took "Keystone start" "${t}"

# Its own process group (setsid), so that cleanup can stop everything it
# started, and nothing else; --wait in case setsid has to fork.
t=${SECONDS}
setsid --wait "${VENV}/bin/python" tests/tempest/harness.py \
  --impls "${impls}" \
  "${args[@]}" \
  --keystone-dir "${keystone_dir}" \
  --workdir "${workdir}" \
  --regex "${regex}" \
  --concurrency "${concurrency}" \
  --known-gaps "${root}/tests/tempest/known_gaps.txt" &
py_pid=$!
status=0
wait "${py_pid}" || status=$?
py_pid=""
took "harness (glance-apis and Tempest)" "${t}"
# Under set -e this ends the script with the harness's status (through cleanup).
(exit "${status}")
