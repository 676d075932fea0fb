#!/usr/bin/env bash
# What the cross-implementation tests (shared_database.sh, shared_s3.sh) share:
# `fail`, and the exit trap that stops whatever the python test started (its
# pid in py_pid, its process group in ${workdir}/pgid) and removes ${workdir}
# unless GLANCE_COMPAT_KEEP=1. Sourced, not run.

workdir=""
py_pid=""

fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # The python test stops what it started; this is the backstop for when it
  # could not (killed, or stuck longer than 40 s): its whole process group.
  if [[ -n "${py_pid}" ]] && kill -0 "${py_pid}" 2>/dev/null; then
    kill -TERM "${py_pid}" 2>/dev/null || true
    for _ in $(seq 1 400); do
      kill -0 "${py_pid}" 2>/dev/null || break
      sleep 0.1
    done
  fi
  if [[ -n "${workdir}" && -s "${workdir}/pgid" ]]; then
    local pgid
    pgid="$(head -n 1 "${workdir}/pgid")"
    if [[ "${pgid}" =~ ^[0-9]+$ && "${pgid}" != "$(ps -o pgid= -p $$ | tr -d ' ')" ]] \
      && kill -0 -- "-${pgid}" 2>/dev/null; then
      kill -TERM -- "-${pgid}" 2>/dev/null || true
      sleep 2
      kill -KILL -- "-${pgid}" 2>/dev/null || true
    fi
  fi
  if [[ -n "${workdir}" ]]; then
    if [[ "${GLANCE_COMPAT_KEEP:-}" == 1 ]]; then
      echo "work directory kept: ${workdir}" >&2
    else
      rm -rf -- "${workdir}"
    fi
  fi
  exit "${status}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
