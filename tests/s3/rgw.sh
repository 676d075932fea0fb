#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with the RADOS Gateway, for the S3 tests.
#
#   tests/s3/rgw.sh start DIR   install Ceph from Debian's packages if missing,
#                               make a new cluster in DIR (config, mon/mgr/osd
#                               data, logs, sockets and pid files), start it,
#                               write DIR/env and print it on stdout
#   tests/s3/rgw.sh stop DIR    stop every daemon of DIR and wait for them to exit
#
# One mon, one mgr, one osd and one radosgw, all on 127.0.0.1: the mon and the
# gateway on free ports, the mgr and osd on ports the daemons pick themselves,
# so several clusters can run side by side. No authentication between the
# daemons (auth none); S3 requests are signed with the keys of the S3 user
# `glance`, made at start. The osd keeps its objects in memory (memstore,
# MEMSTORE_BYTES at most): the data is scratch and each start makes a new
# cluster (a new fsid, new keys) in place of any earlier one in DIR.
#
# DIR/env holds:
#   GLANCE_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#   GLANCE_TEST_S3_ACCESS_KEY=...
#   GLANCE_TEST_S3_SECRET_KEY=...
#   GLANCE_TEST_S3_REGION=default
#   GLANCE_TEST_S3_VHOST_DOMAIN=localhost
#   GLANCE_TEST_S3_RGW_PID=... (and _MON_PID, _MGR_PID, _OSD_PID)
# The region is the zonegroup's name: requests signed for any region are
# accepted, but a CreateBucket LocationConstraint must be absent or `default`.
# Path-style requests work on any host name. `localhost` is the gateway's DNS
# name, so BUCKET.localhost:PORT is a virtual-hosted request, where the
# resolver maps *.localhost to 127.0.0.1 (glibc's files+dns does not).
# The gateway (Ceph 16) predates S3's flexible checksums: a client must not
# send aws-chunked bodies with trailing checksums (compute checksums only when
# an operation requires them).
set -euo pipefail
# shellcheck source=tests/lib/daemons.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/daemons.sh"

readonly S3_USER="glance"
readonly S3_REGION="default"
readonly VHOST_DOMAIN="localhost"
readonly MEMSTORE_BYTES=$((8 * 1024 * 1024 * 1024))
readonly START_TIMEOUT=120
readonly STOP_TIMEOUT=30
# Daemon names: mon.a, mgr.x, osd.0, client.rgw.gw.
readonly DAEMONS=(rgw mgr osd mon) # stop order
readonly PACKAGES=(ceph-mon ceph-osd ceph-mgr radosgw ceph-common)

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

log() { printf 'rgw.sh: %s\n' "$*" >&2; }

# --- binaries ---------------------------------------------------------------

find_binaries() {
  local b
  for b in ceph ceph-mon ceph-mgr ceph-osd radosgw radosgw-admin monmaptool; do
    command -v "${b}" >/dev/null || return 1
  done
}

ensure_installed() {
  find_binaries && return 0
  log "installing ${PACKAGES[*]}"
  # Recommends would add only tools for real disks (lvm, smartmontools, ...).
  apt_install "${PACKAGES[@]}"
  find_binaries || { log "ceph binaries still missing after install"; return 1; }
}

# --- helpers ----------------------------------------------------------------


# Prints $1 random bytes as upper-case hex.
random_hex() {
  od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F'
}

pid_file() { echo "${DIR}/run/$1.pid"; }

# True while process $1 runs (a zombie left for init to reap does not count).
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

# Prints the pid of daemon $1 (mon, mgr, osd, rgw) if it is alive and is the
# daemon of this DIR (not a later process that reused the pid).
live_pid() {
  local f pid
  f="$(pid_file "$1")"
  [[ -s "${f}" ]] || return 1
  pid="$(head -n 1 "${f}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] && alive "${pid}" || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "--conf ${DIR}/ceph.conf " \
    || return 1
  echo "${pid}"
}

# Waits until process $1 has exited, killing it after STOP_TIMEOUT.
wait_gone() {
  local pid="$1" deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "${pid}"; do
    if ((SECONDS >= deadline)); then
      log "pid ${pid} did not stop in ${STOP_TIMEOUT}s; killing it"
      kill -KILL "${pid}" 2>/dev/null || true
      sleep 0.5
      return 0
    fi
    sleep 0.1
  done
}

ceph_cli() { ceph --conf "${DIR}/ceph.conf" --connect-timeout 10 "$@"; }

# Starts daemon $1 (short name) running the command $2..., in the foreground
# of its own session (so no signal sent to the caller's process group reaches
# it), output appended to DIR/log/$1.out, pid in DIR/run/$1.pid.
launch() {
  local name="$1"
  shift
  setsid "$@" --conf "${DIR}/ceph.conf" --foreground \
    </dev/null >>"${DIR}/log/${name}.out" 2>&1 &
  echo $! >"$(pid_file "${name}")"
  disown $! # stop kills it: no "Killed" notice from this shell
}

# Daemon $1's log files, for a failure report.
daemon_logs() {
  case "$1" in
    mon) echo "${DIR}/log/mon.a.log ${DIR}/log/mon.out" ;;
    mgr) echo "${DIR}/log/mgr.x.log ${DIR}/log/mgr.out" ;;
    osd) echo "${DIR}/log/osd.0.log ${DIR}/log/osd.out" ;;
    rgw) echo "${DIR}/log/client.rgw.gw.log ${DIR}/log/rgw.out" ;;
  esac
}

print_logs() {
  local f
  for f in $(daemon_logs "$1"); do
    [[ -s "${f}" ]] || continue
    echo "--- tail of ${f}" >&2
    tail -n 30 "${f}" >&2
  done
}

# Polls `$3...` until it succeeds; fails naming daemon $1 and step $2 (with
# its log) if the daemon exits or START_TIMEOUT passes.
wait_for() {
  local name="$1" what="$2" deadline=$((SECONDS + START_TIMEOUT))
  shift 2
  # Only a pid that is gone counts as exited: just after launch it may still be
  # the forked shell or setsid, not yet the daemon that live_pid looks for.
  local pid
  pid="$(head -n 1 "$(pid_file "${name}")")"
  until "$@" >/dev/null 2>&1; do
    if ! alive "${pid}"; then
      log "${name} exited while waiting for: ${what}"
      print_logs "${name}"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${START_TIMEOUT}s waiting for: ${what}"
      print_logs "${name}"
      return 1
    fi
    sleep 0.5
  done
}

osd_up() { ceph_cli osd stat | grep -q '1 up'; }

# True once the gateway answers an HTTP request on port $1.
s3_answers() (
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  read -r -t 5 status <&3 || exit 1
  while read -r -t 5 _ <&3; do :; done # to the end, as HTTP/1.0 closes
  [[ "${status}" == HTTP/1.?" "[0-9][0-9][0-9]* ]]
)

# --- the cluster ------------------------------------------------------------

# The mgr's optional Python modules: none is needed here, and loading them all
# costs seconds of CPU and 150 MB. (The always-on ones stay: without them the
# cluster reports an error.)
unwanted_mgr_modules() {
  local always_on="balancer|crash|devicehealth|orchestrator|pg_autoscaler|progress"
  always_on+="|rbd_support|status|telemetry|volumes"
  find /usr/share/ceph/mgr -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null \
    | grep -vxE "${always_on}" | sort | tr '\n' ' ' || true
}

write_config() {
  local fsid="$1" mon_port="$2" rgw_port="$3"
  # $name and $cluster are expanded by Ceph, per daemon.
  cat >"${DIR}/ceph.conf" <<EOF
[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${mon_port}]
public addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = /dev/null
run dir = ${DIR}/run
crash dir = ${DIR}/crash
admin socket = ${DIR}/run/\$cluster-\$name.asok
log file = ${DIR}/log/\$name.log
# One osd: every pool has one replica and few placement groups.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# Warnings that do not apply to a scratch cluster on a shared disk.
mon data avail warn = 0
mon data avail crit = 0
mon warn on insecure global id reclaim allowed = false

[mon]
mon data = ${DIR}/mon
mon cluster log file = ${DIR}/log/cluster.log
# Every pool radosgw makes waits for a map change or two: commit them at once
# instead of batching them for a second.
paxos propose interval = 0.1

[mgr]
mgr data = ${DIR}/mgr
mgr initial modules =
mgr disabled modules = $(unwanted_mgr_modules)

[osd]
osd data = ${DIR}/osd
osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES}
osd crush initial weight = 1
# Few worker threads: the machine may have only two cores.
osd op num shards = 2
osd op num threads per shard = 2

[client.rgw.gw]
# radosgw asks for an encrypted mon session by default, which needs cephx.
ms mon client mode = crc
rgw data = ${DIR}/rgw
rgw frontends = beast endpoint=127.0.0.1:${rgw_port}
rgw dns name = ${VHOST_DOMAIN}
rgw thread pool size = 32
# No background work the tests do not need.
rgw dynamic resharding = false
rgw enable usage log = false
rgw enable ops log = false
rgw enable lc threads = false
rgw enable quota threads = false
rgw override bucket index max shards = 1
# Deleted objects' data is freed within seconds, not hours: the store is memory.
rgw gc obj min wait = 0
rgw gc processor period = 2
rgw gc processor max time = 2
EOF
}

new_cluster() {
  local mon_port="$1" rgw_port="$2" fsid d
  fsid="$(cat /proc/sys/kernel/random/uuid)"
  for d in mon mgr osd rgw run log crash; do rm -rf "${DIR:?}/${d}"; done
  rm -f "${DIR}/ceph.conf" "${DIR}/monmap" "${DIR}/env"
  mkdir -p "${DIR}"/{mon,mgr,osd,rgw,run,log,crash}
  write_config "${fsid}" "${mon_port}" "${rgw_port}"
  if ! { monmaptool --create --fsid "${fsid}" --addv a "[v2:127.0.0.1:${mon_port}]" \
    "${DIR}/monmap" && ceph-mon --conf "${DIR}/ceph.conf" --id a --mkfs \
    --monmap "${DIR}/monmap"; } >"${DIR}/log/mkfs.log" 2>&1; then
    log "creating the mon failed"
    tail -n 30 "${DIR}/log/mkfs.log" >&2
    return 1
  fi
}

# Registers osd.0 with the mon and formats its store.
make_osd() {
  local uuid id
  uuid="$(cat /proc/sys/kernel/random/uuid)"
  id="$(ceph_cli osd new "${uuid}" 2>>"${DIR}/log/mkfs.log")" \
    || { log "ceph osd new failed"; tail -n 30 "${DIR}/log/mkfs.log" >&2; return 1; }
  [[ "${id}" == 0 ]] || { log "ceph osd new gave id ${id}, not 0"; return 1; }
  ceph-osd --conf "${DIR}/ceph.conf" --id 0 --mkfs --osd-uuid "${uuid}" \
    >>"${DIR}/log/mkfs.log" 2>&1 \
    || { log "ceph-osd --mkfs failed"; tail -n 30 "${DIR}/log/mkfs.log" >&2; return 1; }
}

make_s3_user() {
  radosgw-admin --conf "${DIR}/ceph.conf" user create --uid="${S3_USER}" \
    --display-name="${S3_USER}" --access-key="$1" --secret-key="$2" \
    >"${DIR}/log/user-create.log" 2>&1 \
    || { log "radosgw-admin user create failed"; tail -n 30 "${DIR}/log/user-create.log" >&2; return 1; }
}

# --- start / stop -----------------------------------------------------------

stop_daemons() {
  local name pid
  for name in "${DAEMONS[@]}"; do
    pid="$(live_pid "${name}")" || continue
    # memstore writes all its objects to DIR on a clean shutdown; they are
    # never read again, so the osd is killed outright.
    if [[ "${name}" == osd ]]; then
      kill -KILL "${pid}" 2>/dev/null || true
    else
      kill -TERM "${pid}" 2>/dev/null || true
    fi
    wait_gone "${pid}"
  done
  rm -f "${DIR}/env"
}

started_ok=0
on_start_exit() {
  ((started_ok)) && return 0
  log "start failed"
  stop_daemons
}

cmd_start() {
  local name mon_port rgw_port access_key secret_key t0
  for name in "${DAEMONS[@]}"; do
    if live_pid "${name}" >/dev/null; then
      log "the cluster in ${DIR} is already running; stop it first"
      return 1
    fi
  done
  ensure_installed
  mkdir -p "${DIR}"
  trap on_start_exit EXIT
  t0=${SECONDS}

  read -r mon_port rgw_port < <(free_ports)
  new_cluster "${mon_port}" "${rgw_port}"

  launch mon ceph-mon --id a
  wait_for mon "the mon to form a quorum" ceph_cli mon stat

  make_osd
  launch osd ceph-osd --id 0
  launch mgr ceph-mgr --id x
  wait_for osd "osd.0 to be up" osd_up

  launch rgw radosgw --name client.rgw.gw
  wait_for rgw "radosgw to answer on port ${rgw_port}" s3_answers "${rgw_port}"

  access_key="$(random_hex 10)"
  secret_key="$(random_hex 20)"
  make_s3_user "${access_key}" "${secret_key}"

  cat >"${DIR}/env" <<EOF
GLANCE_TEST_S3_ENDPOINT=http://127.0.0.1:${rgw_port}
GLANCE_TEST_S3_ACCESS_KEY=${access_key}
GLANCE_TEST_S3_SECRET_KEY=${secret_key}
GLANCE_TEST_S3_REGION=${S3_REGION}
GLANCE_TEST_S3_VHOST_DOMAIN=${VHOST_DOMAIN}
GLANCE_TEST_S3_RGW_PID=$(live_pid rgw)
GLANCE_TEST_S3_MON_PID=$(live_pid mon)
GLANCE_TEST_S3_MGR_PID=$(live_pid mgr)
GLANCE_TEST_S3_OSD_PID=$(live_pid osd)
EOF
  chmod 644 "${DIR}/env"
  started_ok=1
  log "ceph and radosgw up in $((SECONDS - t0))s"
  cat "${DIR}/env"
}

cmd_stop() {
  stop_daemons
}

# --- main -------------------------------------------------------------------

[[ $# == 2 ]] || usage
# The admin socket paths must stay within the 107-byte limit of unix sockets.
work_dir "$2"
if ((${#DIR} > 70)); then
  log "DIR is too long for unix socket paths (max 70 characters): ${DIR}"
  exit 2
fi

case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) usage ;;
esac
