#!/usr/bin/env bash
# Acceptance test: the README's "glance-api locally" walk-through, run as a user
# would run it. glance-api is started with no arguments at all in a fresh empty
# directory, so it runs on its embedded defaults (SQLite, file store and image
# cache under ./glance-data, the cachemanagement flavor, no authentication,
# 127.0.0.1:9292), and python-glanceclient's `glance` CLI drives it through
# OS_IMAGE_URL and OS_AUTH_TOKEN.
#
# Each passed step prints "ok: <step>" and the run ends with "N passed, 0 failed";
# the first failed step prints "FAIL: <step>: <why>" and the server log, and
# exits 1. Nothing is left behind: the server is stopped and its directory removed.
#
# GLANCE_API_BIN=path/to/glance-api skips the build and uses that binary.
# Needs: cargo, curl, cmp, python3, qemu-img (qemu-utils), the venv from .ci/venv.sh,
# and the port 9292 on 127.0.0.1 free.
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"

venv="${root}/.venv"
[[ -x "${venv}/bin/glance" ]] || {
  echo "FAIL: setup: ${venv}/bin/glance is missing; run .ci/venv.sh" >&2
  exit 1
}

# The client reads OS_* variables (OS_CLOUD, OS_AUTH_URL, ...): a developer's own
# cloud settings must not leak into the test.
while IFS= read -r var; do
  unset "${var}"
done < <(compgen -e | grep '^OS_' || true)

url="http://127.0.0.1:9292"
server_pid=""
top=""
log=""
passed=0

cleanup() {
  local status=$?
  if [[ -n "${server_pid}" ]] && kill -0 "${server_pid}" 2>/dev/null; then
    kill "${server_pid}" 2>/dev/null || true
    wait "${server_pid}" 2>/dev/null || true
  fi
  if ((status != 0)) && [[ -n "${log}" && -f "${log}" ]]; then
    echo "---- glance-api log (${log}) ----" >&2
    cat -- "${log}" >&2
    echo "---- end of glance-api log ----" >&2
  fi
  cd / || true
  if [[ -n "${top}" ]]; then
    rm -rf -- "${top}"
  fi
  exit "${status}"
}
trap cleanup EXIT

fail() {
  printf 'FAIL: %s: %b\n' "$1" "$2" >&2
  exit 1
}

ok() {
  passed=$((passed + 1))
  printf 'ok: %s\n' "$1"
}

# --- build and start glance-api -------------------------------------------

step="build glance-api"
if [[ -n "${GLANCE_API_BIN:-}" ]]; then
  bin="$(realpath -- "${GLANCE_API_BIN}")" \
    || fail "${step}" "GLANCE_API_BIN=${GLANCE_API_BIN} does not exist"
else
  cargo build --quiet --locked --bin glance-api || fail "${step}" "cargo build failed"
  bin="$(realpath -- "${CARGO_TARGET_DIR:-${root}/target}/debug/glance-api")"
fi
[[ -x "${bin}" ]] || fail "${step}" "no executable at ${bin}"
ok "${step} (${bin})"

step="qemu-img"
command -v qemu-img >/dev/null \
  || fail "${step}" "qemu-img is missing; install the qemu-utils package (tests/run.sh does)"

# The embedded defaults listen on 127.0.0.1:9292, not on a port of our choosing.
step="port 9292 is free"
if ! port_err="$(python3 - 2>&1 <<'EOF'
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9292))
s.close()
EOF
)"; then
  fail "${step}" "127.0.0.1:9292 is already in use (glance-api's embedded defaults listen there); stop whatever listens on it and rerun:\n${port_err##*$'\n'}"
fi
ok "${step}"

# A fresh empty directory as the working directory: glance-data/ is created in it.
top="$(mktemp -d "${TMPDIR:-/tmp}/glance-defaults.XXXXXX")"
log="${top}/glance-api.log"
mkdir "${top}/work"
cd "${top}/work"
work="$(pwd -P)"

step="start glance-api with no arguments"
"${bin}" >"${log}" 2>&1 &
server_pid=$!
ready=""
for _ in $(seq 1 150); do
  if ! kill -0 "${server_pid}" 2>/dev/null; then
    fail "${step}" "glance-api exited before it was ready"
  fi
  if curl -fsS --max-time 2 "${url}/healthcheck" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
[[ -n "${ready}" ]] || fail "${step}" "GET ${url}/healthcheck did not answer within 30 s"
ok "${step} (${url}, in ${work})"

step="qemu-img create -f qcow2 test.qcow2 64M"
if ! out="$(qemu-img create -f qcow2 test.qcow2 64M 2>&1)"; then
  fail "${step}" "qemu-img failed:\n${out}"
fi
image_size="$(stat -c %s test.qcow2)"
ok "${step} (${image_size} bytes)"

# --- the README walk-through ----------------------------------------------

export OS_IMAGE_URL="${url}" OS_AUTH_TOKEN=x

# run STEP ARGS...: `glance ARGS...` must exit 0; its output is left in $out.
out=""
run() {
  local step="$1"
  shift
  if ! out="$("${venv}/bin/glance" "$@" 2>&1)"; then
    fail "${step}" "\`glance $*\` exited non-zero:\n${out}"
  fi
}

# field NAME: the value of row NAME in a `glance image-*` property table on stdin.
field() {
  awk -F'|' -v k="$1" '{
    key = $2; val = $3
    gsub(/^ +| +$/, "", key); gsub(/^ +| +$/, "", val)
    if (key == k) { print val; exit }
  }'
}

# cache_row ID: "STATE SIZE HITS" of image ID in `glance cache-list` output on stdin.
cache_row() {
  awk -F'|' -v id="$1" '{
    for (i = 2; i <= 7; i++) gsub(/^ +| +$/, "", $i)
    if ($2 == id) { print $3, $6, $7; exit }
  }'
}

# cached_ids: the ids `glance cache-list` on stdin lists as cached.
cached_ids() {
  awk -F'|' '{
    for (i = 2; i <= 3; i++) gsub(/^ +| +$/, "", $i)
    if ($3 == "cached") print $2
  }'
}

step="glance image-create --name cirros --disk-format qcow2 --container-format bare --file test.qcow2"
run "${step}" image-create --name cirros --disk-format qcow2 --container-format bare --file test.qcow2
id="$(field id <<<"${out}")"
[[ "${id}" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] \
  || fail "${step}" "no image id in the output:\n${out}"
[[ "$(field status <<<"${out}")" == active ]] \
  || fail "${step}" "status is not active after the upload:\n${out}"
[[ "$(field size <<<"${out}")" == "${image_size}" ]] \
  || fail "${step}" "size is not ${image_size}:\n${out}"
data_file="glance-data/images/${id}"
[[ -f "${data_file}" ]] || fail "${step}" "no data file ${work}/${data_file}"
ok "image-create (${id}, active)"

step="image location recorded as an absolute file:/// URL"
if ! location="$(python3 - "glance-data/glance.sqlite" "${id}" 2>&1 <<'EOF'
import sqlite3
import sys

db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = db.execute(
    "SELECT value FROM image_locations WHERE image_id = ? AND NOT deleted",
    (sys.argv[2],),
).fetchall()
if len(rows) != 1:
    sys.exit(f"want 1 location row, got {rows!r}")
print(rows[0][0])
EOF
)"; then
  fail "${step}" "reading image_locations from glance-data/glance.sqlite failed:\n${location}"
fi
[[ "${location}" == file:///* ]] \
  || fail "${step}" "the location is ${location}, not an absolute file:/// URL"
[[ "$(realpath -m -- "${location#file://}")" == "$(realpath -- "${data_file}")" ]] \
  || fail "${step}" "the location ${location} is not the data file ${work}/${data_file}"
ok "${step} (${location})"

step="glance image-list"
run "${step}" image-list
grep -Eq "^\| ${id} \| cirros +\|" <<<"${out}" \
  || fail "${step}" "image ${id} named cirros is not listed:\n${out}"
ok "${step}"

cache_file="glance-data/image-cache/${id}"

step="glance image-download --file copy1.img (cache miss)"
[[ ! -e "${cache_file}" ]] || fail "${step}" "${cache_file} exists before any download"
run "${step}" image-download --file copy1.img "${id}"
cmp test.qcow2 copy1.img >/dev/null 2>&1 \
  || fail "${step}" "copy1.img ($(stat -c %s copy1.img) bytes) differs from test.qcow2 (${image_size} bytes)"
ok "${step} (identical to test.qcow2)"

# The cache file is admitted once the response has been streamed: allow a moment.
step="the miss filled the cache"
for _ in $(seq 1 50); do
  [[ -f "${cache_file}" ]] && break
  sleep 0.2
done
[[ -f "${cache_file}" ]] || fail "${step}" "${cache_file} does not exist 10 s after the download"
ok "${step} (${cache_file})"

step="glance image-download --file copy2.img (cache hit)"
run "${step}" image-download --file copy2.img "${id}"
cmp test.qcow2 copy2.img >/dev/null 2>&1 \
  || fail "${step}" "copy2.img ($(stat -c %s copy2.img) bytes) differs from test.qcow2 (${image_size} bytes)"
ok "${step} (identical to test.qcow2)"

step="glance cache-list"
run "${step}" cache-list
row="$(cache_row "${id}" <<<"${out}")"
[[ "${row}" == cached* ]] || fail "${step}" "image ${id} is not listed as cached:\n${out}"
read -r _ c_size c_hits <<<"${row}"
ok "${step} (cached, ${c_size} bytes, ${c_hits} hits)"

step="glance cache-delete"
run "${step}" cache-delete "${id}"
run "${step}" cache-list
[[ -z "$(cache_row "${id}" <<<"${out}")" ]] \
  || fail "${step}" "image ${id} is still in cache-list after cache-delete:\n${out}"
[[ ! -e "${cache_file}" ]] || fail "${step}" "${cache_file} is still there after cache-delete"
ok "${step}"

step="glance cache-queue (background prefetch)"
queued_at=${SECONDS}
run "${step}" cache-queue "${id}"
cached=""
for _ in $(seq 1 60); do
  run "${step}" cache-list
  if [[ "$(cache_row "${id}" <<<"${out}")" == cached* && -f "${cache_file}" ]]; then
    cached=1
    break
  fi
  sleep 0.5
done
[[ -n "${cached}" ]] \
  || fail "${step}" "image ${id} not cached within 30 s of cache-queue (${cache_file} $([[ -f "${cache_file}" ]] && echo exists || echo missing)); last cache-list:\n${out}"
got_size="$(stat -c %s "${cache_file}")"
[[ "${got_size}" == "${image_size}" ]] \
  || fail "${step}" "${cache_file} has ${got_size} bytes, want ${image_size}"
invalid="$(find glance-data/image-cache/invalid -name "*${id}*" 2>/dev/null || true)"
[[ -z "${invalid}" ]] || fail "${step}" "the prefetch left an invalid cache file:\n${invalid}"
ok "${step} (cached again after ~$((SECONDS - queued_at)) s, ${got_size} bytes)"

step="glance cache-clear"
run "${step}" cache-clear
run "${step}" cache-list
[[ -z "$(cached_ids <<<"${out}")" ]] \
  || fail "${step}" "cache-list still lists cached images after cache-clear:\n${out}"
ok "${step}"

step="glance image-delete"
run "${step}" image-delete "${id}"
if out="$("${venv}/bin/glance" image-show "${id}" 2>&1)"; then
  fail "${step}" "glance image-show ${id} still succeeds after image-delete:\n${out}"
fi
for _ in $(seq 1 25); do
  [[ -e "${data_file}" ]] || break
  sleep 0.2
done
[[ ! -e "${data_file}" ]] || fail "${step}" "the data file ${work}/${data_file} is still there after image-delete"
ok "${step} (image-show fails, data file gone)"

printf '%s passed, 0 failed\n' "${passed}"
