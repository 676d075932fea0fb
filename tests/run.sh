#!/usr/bin/env bash
# Runs every check of the project, each as its own reported step. On a new machine it
# first installs what it needs (a Python venv with the linters and schema validator).
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"

failed=()
step() {
  local name="$1"
  shift
  printf '\n==> %s\n' "${name}"
  local start=${SECONDS}
  if "$@"; then
    printf '<== %s: ok (%ss)\n' "${name}" "$((SECONDS - start))"
  else
    printf '<== %s: FAILED (%ss)\n' "${name}" "$((SECONDS - start))"
    failed+=("${name}")
  fi
}

install_tools() {
  if ! command -v kubectl >/dev/null; then
    sudo_cmd=()
    [[ "$(id -u)" == 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq kubectl
  fi
  .ci/venv.sh >/dev/null
}

tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
  else
    cargo test --locked --no-fail-fast
  fi
}

crds_fresh() {
  cargo run --quiet --locked --bin crdgen | diff -u crds/glance.yaml - \
    || { echo "crds/ is stale: cargo run --bin crdgen > crds/glance.yaml"; return 1; }
}

kustomize_renders() {
  local dir
  for dir in config/default samples/base samples/image-cache; do
    kubectl kustomize "${dir}" >/dev/null || return 1
  done
}

shell_lint() {
  .venv/bin/shellcheck tests/run.sh .ci/run .ci/venv.sh benches/upstream/setup.sh \
    tests/acceptance/glanceclient.sh
}

step "install tools" install_tools
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --locked --all-targets -- -D warnings
step "tests" tests
step "acceptance: python-glanceclient" tests/acceptance/glanceclient.sh
step "crds drift" crds_fresh
step "kustomize renders" kustomize_renders
step "shellcheck" shell_lint

if ((${#failed[@]})); then
  printf '\nFAILED: %s\n' "${failed[@]}"
  exit 1
fi
printf '\nall checks passed\n'
