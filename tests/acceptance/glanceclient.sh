#!/usr/bin/env bash
# Acceptance test: drives a real glance-api with the upstream OpenStack clients
# (python-glanceclient's `glance` CLI and openstacksdk, pinned in .ci/venv.sh).
#
# Builds glance-api, starts it on a free loopback port with every feature on
# (file store, SQLite, image cache with the cachemanagement flavor), then runs
# the client steps one by one. Each passed step prints "ok: <step>"; the first
# failed one prints "FAIL: <step>: <why>" and the server log, and exits 1.
#
# Needs: cargo, curl, md5sum, cmp, and the venv from .ci/venv.sh.
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"

venv="${root}/.venv"
[[ -x "${venv}/bin/glance" ]] || {
  echo "FAIL: setup: ${venv}/bin/glance is missing; run .ci/venv.sh" >&2
  exit 1
}

# The clients read OS_* variables (OS_CLOUD, OS_AUTH_URL, ...): a developer's
# own cloud settings must not leak into the test.
while IFS= read -r var; do
  unset "${var}"
done < <(compgen -e | grep '^OS_' || true)

server_pid=""
workdir=""
log=""

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
  if [[ -n "${workdir}" ]]; then
    rm -rf -- "${workdir}"
  fi
  exit "${status}"
}
trap cleanup EXIT

fail() {
  printf 'FAIL: %s: %b\n' "$1" "$2" >&2
  exit 1
}

ok() {
  printf 'ok: %s\n' "$1"
}

# Known glance-api incompatibility, recognised in glanceclient's output.
# glanceclient (glanceclient/exc.py from_response) handles a JSON error body by
# calling .get('message') on every top-level value, so a flat body such as
# {"code":404,"title":"Not Found","message":"..."} crashes it. Upstream Glance
# (webob) answers glanceclient's "Accept: */*" with a text/html error page.
hint() {
  if [[ "$1" == *"object has no attribute 'get'"* ]]; then
    printf '\n  -> glanceclient could not parse glance-api'"'"'s error body: glance-api sent a flat'
    printf '\n     JSON error (Content-Type: application/json, {"code":N,"title":..,"message":..}),'
    printf '\n     but glanceclient only parses JSON errors whose top-level values are objects,'
    printf '\n     e.g. {"itemNotFound": {"code": 404, "message": ".."}}; upstream Glance answers'
    printf '\n     its "Accept: */*" with a text/html error page (src/api/error.rs).'
  fi
}

# --- build and start glance-api -------------------------------------------

cargo build --quiet --bin glance-api
bin="${CARGO_TARGET_DIR:-${root}/target}/debug/glance-api"
[[ -x "${bin}" ]] || fail "build" "no binary at ${bin}"
ok "build glance-api"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/glance-acceptance.XXXXXX")"
log="${workdir}/glance-api.log"
port="$("${venv}/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
')"
url="http://127.0.0.1:${port}"

cat >"${workdir}/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = ${port}
enabled_backends = default_backend:file
image_cache_dir = ${workdir}/image-cache
image_cache_max_size = 1073741824
[glance_store]
default_backend = default_backend
[default_backend]
filesystem_store_datadir = ${workdir}/images
[database]
connection = sqlite:///${workdir}/glance.sqlite
[paste_deploy]
flavor = cachemanagement
EOF

"${bin}" --config-file "${workdir}/glance-api.conf" >"${log}" 2>&1 &
server_pid=$!

ready=""
for _ in $(seq 1 100); do
  if ! kill -0 "${server_pid}" 2>/dev/null; then
    fail "start glance-api" "glance-api exited before it was ready"
  fi
  if [[ "$(curl -fsS --max-time 2 "${url}/healthcheck" 2>/dev/null || true)" == "OK" ]]; then
    ready=1
    break
  fi
  sleep 0.1
done
[[ -n "${ready}" ]] || fail "start glance-api" "GET ${url}/healthcheck did not answer 200 OK within 10 s"
ok "start glance-api on ${url}"

# Test data: a few MiB of random bytes.
data="${workdir}/data.bin"
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"${data}"
data_size="$(stat -c %s "${data}")"
data_md5="$(md5sum "${data}" | cut -d' ' -f1)"

# --- openstacksdk ---------------------------------------------------------
# No keystone: auth_type 'none' (keystoneauth's noauth plugin) plus an
# image_endpoint_override pointing at glance-api. The SDK then does its
# version discovery on that endpoint and talks v2 directly.

if ! sdk_out="$(GLANCE_URL="${url}" DATA="${data}" "${venv}/bin/python" - 2>&1 <<'EOF'
import hashlib
import os
import sys

import openstack

url = os.environ["GLANCE_URL"]
with open(os.environ["DATA"], "rb") as f:
    data = f.read()
md5 = hashlib.md5(data).hexdigest()


def check(step, cond, msg):
    if not cond:
        print(f"FAIL: openstacksdk {step}: {msg}")
        sys.exit(1)
    print(f"ok: openstacksdk {step}")


conn = openstack.connection.Connection(
    auth_type="none",
    image_endpoint_override=url,
    image_api_version="2",
)

img = conn.image.create_image(
    name="acceptance-sdk",
    data=data,
    disk_format="raw",
    container_format="bare",
)
img = conn.image.get_image(img.id)
check(
    "create_image with data",
    img.status == "active" and img.size == len(data) and img.checksum == md5,
    f"got status={img.status!r} size={img.size!r} checksum={img.checksum!r}, "
    f"want active/{len(data)}/{md5}",
)

ids = [i.id for i in conn.image.images()]
check("images() lists it", img.id in ids, f"{img.id} not in {ids}")

resp = conn.image.download_image(img)
body = resp.content if hasattr(resp, "content") else resp
check(
    "download_image",
    body == data,
    f"downloaded {len(body)} bytes (md5 {hashlib.md5(body).hexdigest()}), "
    f"want {len(data)} bytes (md5 {md5})",
)

conn.image.delete_image(img, ignore_missing=False)
gone = conn.image.find_image(img.id, ignore_missing=True)
check("delete_image", gone is None, f"find_image still returns {gone!r}")
EOF
)"; then
  printf '%s\n' "${sdk_out}"
  fail "openstacksdk" "the openstacksdk script failed (output above)"
fi
printf '%s\n' "${sdk_out}"

# --- python-glanceclient --------------------------------------------------

glance() {
  "${venv}/bin/glance" --os-image-url "${url}" --os-auth-token x "$@"
}

# run STEP ARGS...: `glance ARGS...` must exit 0; its output is left in $out.
out=""
run() {
  local step="$1"
  shift
  if ! out="$(glance "$@" 2>&1)"; then
    fail "${step}" "\`glance $*\` exited non-zero:\n${out}$(hint "${out}")"
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

# wait_cached STEP ID SECONDS: polls cache-list until ID is listed as cached.
wait_cached() {
  local step="$1" id="$2" secs="$3" row="" i
  for ((i = 0; i < secs * 4; i++)); do
    run "${step}" cache-list
    row="$(cache_row "${id}" <<<"${out}")"
    [[ "${row}" == cached* ]] && return 0
    sleep 0.25
  done
  fail "${step}" "image ${id} not listed as cached within ${secs} s; last cache-list:\n${out}"
}

step="image-create --file"
run "${step}" image-create --file "${data}" --disk-format raw \
  --container-format bare --name acceptance
id="$(field id <<<"${out}")"
[[ "${id}" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] \
  || fail "${step}" "no image id in the output:\n${out}"
[[ "$(field status <<<"${out}")" == active ]] \
  || fail "${step}" "status is not active after the upload:\n${out}"
ok "${step} (${id})"

step="image-list"
run "${step}" image-list
grep -Eq "^\| ${id} \| acceptance +\|" <<<"${out}" \
  || fail "${step}" "image ${id} named acceptance is not listed:\n${out}"
ok "${step}"

step="image-show"
run "${step}" image-show "${id}"
got_status="$(field status <<<"${out}")"
got_size="$(field size <<<"${out}")"
got_checksum="$(field checksum <<<"${out}")"
[[ "${got_status}" == active && "${got_size}" == "${data_size}" && "${got_checksum}" == "${data_md5}" ]] \
  || fail "${step}" "want status=active size=${data_size} checksum=${data_md5}, got status=${got_status} size=${got_size} checksum=${got_checksum}:\n${out}"
ok "${step} (active, ${got_size} bytes, md5 ${got_checksum})"

step="cache-list before any download"
run "${step}" cache-list
[[ -z "$(cache_row "${id}" <<<"${out}")" ]] \
  || fail "${step}" "image ${id} is in the cache before any download:\n${out}"
ok "${step}"

step="image-download"
run "${step}" image-download --file "${workdir}/out1.bin" "${id}"
cmp -s "${data}" "${workdir}/out1.bin" \
  || fail "${step}" "downloaded bytes differ from the uploaded file ($(stat -c %s "${workdir}/out1.bin") vs ${data_size} bytes)"
ok "${step} (byte-identical)"

# The first full download fills the cache (the cache file is admitted once the
# response has been streamed, so allow it a moment).
step="cache-list after download"
wait_cached "${step}" "${id}" 10
read -r _ c_size c_hits <<<"$(cache_row "${id}" <<<"${out}")"
[[ "${c_size}" == "${data_size}" ]] \
  || fail "${step}" "cached size is ${c_size}, want ${data_size}:\n${out}"
ok "${step} (cached, ${c_size} bytes, ${c_hits} hits)"

step="image-download from the cache"
run "${step}" image-download --file "${workdir}/out2.bin" "${id}"
cmp -s "${data}" "${workdir}/out2.bin" \
  || fail "${step}" "bytes served from the cache differ from the uploaded file"
run "${step}" cache-list
read -r _ _ c_hits2 <<<"$(cache_row "${id}" <<<"${out}")"
[[ "${c_hits2}" =~ ^[0-9]+$ && "${c_hits2}" -gt "${c_hits}" ]] \
  || fail "${step}" "cache hits did not go up (${c_hits} -> ${c_hits2}): the second download was not a cache hit:\n${out}"
ok "${step} (byte-identical, hits ${c_hits} -> ${c_hits2})"

step="image-update --property foo=bar"
run "${step}" image-update --property foo=bar "${id}"
[[ "$(field foo <<<"${out}")" == bar ]] \
  || fail "${step}" "the update's answer has no foo=bar:\n${out}"
run "${step}" image-show "${id}"
[[ "$(field foo <<<"${out}")" == bar ]] \
  || fail "${step}" "image-show after the update has no foo=bar:\n${out}"
ok "${step}"

step="image-tag-update"
run "${step}" image-tag-update "${id}" acceptance-tag
run "${step}" image-show "${id}"
[[ "$(field tags <<<"${out}")" == *'"acceptance-tag"'* ]] \
  || fail "${step}" "image-show does not list the tag acceptance-tag:\n${out}"
ok "${step}"

step="image-tag-delete"
run "${step}" image-tag-delete "${id}" acceptance-tag
run "${step}" image-show "${id}"
[[ "$(field tags <<<"${out}")" != *acceptance-tag* ]] \
  || fail "${step}" "image-show still lists the tag acceptance-tag:\n${out}"
ok "${step}"

step="cache-delete"
run "${step}" cache-delete "${id}"
run "${step}" cache-list
[[ -z "$(cache_row "${id}" <<<"${out}")" ]] \
  || fail "${step}" "image ${id} is still in cache-list after cache-delete:\n${out}"
ok "${step}"

step="cache-queue (background prefetch)"
queued_at=${SECONDS}
run "${step}" cache-queue "${id}"
wait_cached "${step}" "${id}" 20
ok "${step} (cached again after ~$((SECONDS - queued_at)) s)"

step="cache-clear --target queue"
run "${step}" cache-clear --target queue
run "${step}" cache-list
[[ "$(cache_row "${id}" <<<"${out}")" == cached* ]] \
  || fail "${step}" "clearing the queue removed the cached image ${id}:\n${out}"
ok "${step} (cached image kept)"

step="cache-clear --target cache"
run "${step}" cache-clear --target cache
run "${step}" cache-list
[[ -z "$(cache_row "${id}" <<<"${out}")" ]] \
  || fail "${step}" "image ${id} is still listed after cache-clear --target cache:\n${out}"
ok "${step}"

step="cache-clear"
run "${step}" cache-queue "${id}"
wait_cached "${step}" "${id}" 20
run "${step}" cache-clear
run "${step}" cache-list
[[ -z "$(cache_row "${id}" <<<"${out}")" ]] \
  || fail "${step}" "image ${id} is still listed after cache-clear:\n${out}"
ok "${step}"

step="image-delete"
run "${step}" image-delete "${id}"
run "${step}" image-list
! grep -q "${id}" <<<"${out}" \
  || fail "${step}" "image ${id} is still listed after image-delete:\n${out}"
ok "${step}"

step="image-show after delete"
if out="$(glance image-show "${id}" 2>&1)"; then
  fail "${step}" "image-show of the deleted image ${id} succeeded:\n${out}"
fi
grep -Eiq '404|not found|no image' <<<"${out}" \
  || fail "${step}" "\`glance image-show ${id}\` (GET /v2/images/${id}) failed without a not-found error:\n${out}$(hint "${out}")"
ok "${step} ($(head -n1 <<<"${out}"))"

echo "all glanceclient/openstacksdk acceptance steps passed"
