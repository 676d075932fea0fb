#!/usr/bin/env bash
# Shell helpers shared by the scripts that start servers for the tests
# (tests/db/servers.sh, tests/s3/rgw.sh, tests/keystone/keystone.sh). Sourced, not run.

# Installs Debian packages $@ (apt-get, through sudo unless root), refreshing
# the package lists only when the first attempt fails.
apt_install() {
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  [[ "$(id -u)" == 0 ]] || apt=(sudo "${apt[@]}")
  if ! "${apt[@]}" install -y -qq --no-install-recommends "$@" >&2; then
    "${apt[@]}" update -qq >&2
    "${apt[@]}" install -y -qq --no-install-recommends "$@" >&2
  fi
}

# Prints two distinct free TCP ports on 127.0.0.1.
free_ports() {
  if command -v python3 >/dev/null; then
    python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    return
  fi
  # No Python: random ports on which nothing answers.
  local ports=() p
  while ((${#ports[@]} < 2)); do
    p=$((20000 + RANDOM % 40000))
    [[ " ${ports[*]} " == *" ${p} "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${p}") 2>/dev/null; then ports+=("${p}"); fi
  done
  echo "${ports[*]}"
}

# Prints the pid from pid file $1 if that process is alive.
live_pid() {
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(head -n 1 "$1")"
  [[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null || return 1
  echo "${pid}"
}

# Waits until no process has pid $1, at most STOP_TIMEOUT seconds (set by the
# sourcing script), then kills it; logs with the sourcing script's `log`.
wait_gone() {
  local pid="$1" deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "${pid}" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "pid ${pid} did not stop in ${STOP_TIMEOUT}s; killing it"
      kill -KILL "${pid}" 2>/dev/null || true
      sleep 0.5
      return 0
    fi
    sleep 0.1
  done
}

# Sets DIR to directory $1 made absolute, without a trailing slash; exits 2 (with
# the sourcing script's `log`) unless its characters are safe to splice into SQL and
# configuration files.
work_dir() {
  case "$1" in
    /*) DIR="$1" ;;
    *) DIR="$(pwd)/$1" ;;
  esac
  DIR="${DIR%/}"
  if [[ ! "${DIR}" =~ ^[A-Za-z0-9_./+@:-]+$ ]]; then
    log "DIR must contain only letters, digits and _./+@:- : ${DIR}"
    exit 2
  fi
}
