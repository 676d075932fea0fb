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

# Runs the test suite, or only the named test targets.
tests() {
  local targets=()
  local name
  for name in "$@"; do targets+=(--test "${name}"); done
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast "${targets[@]}"
  else
    cargo test --locked --no-fail-fast "${targets[@]}"
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

linters() {
  .venv/bin/shellcheck tests/run.sh .ci/run .ci/venv.sh benches/upstream/*.sh \
    tests/acceptance/glanceclient.sh tests/e2e/kind.sh \
    && .venv/bin/hadolint Dockerfile \
    && .venv/bin/actionlint .github/workflows/*.yml
}

# Licences only: an advisory check needs the RustSec database from GitHub, which a
# machine limited to package registries cannot fetch.
licences() {
  python3 .ci/licenses.py
}

step "install tools" install_tools
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --locked --all-targets -- -D warnings
step "tests" tests
step "acceptance: python-glanceclient" tests/acceptance/glanceclient.sh
step "crds drift" crds_fresh
step "kustomize renders" kustomize_renders
step "manifest schema validation" tests manifests
step "hadolint, actionlint, shellcheck" linters
step "licences" licences

if ((${#failed[@]})); then
  printf '\nFAILED: %s\n' "${failed[@]}"
  exit 1
fi
printf '\nall checks passed\n'
