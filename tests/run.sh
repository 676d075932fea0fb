#!/usr/bin/env bash
# Runs every check of the project, each as its own reported step. On a new machine it
# first installs what it needs (a Python venv with the linters and schema validator,
# MariaDB, PostgreSQL and Ceph from Debian's packages). The servers run in temporary
# directories for the length of the run: the databases as an unprivileged user, and a
# single-node Ceph cluster whose RADOS Gateway is the S3 server of the S3 tests.
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"

# One build per run: incremental state would only take disk.
export CARGO_INCREMENTAL=0
df -h . /tmp | sed 's/^/disk: /'

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

# kubectl (kustomize); qemu-img, which builds the disk images the format inspector
# tests upload; and OpenSSL's headers, for the digests.
install_tools() {
  local packages=()
  command -v kubectl >/dev/null || packages+=(kubectl)
  command -v qemu-img >/dev/null || packages+=(qemu-utils)
  pkg-config --exists openssl 2>/dev/null || packages+=(libssl-dev pkg-config)
  if ((${#packages[@]})); then
    sudo_cmd=()
    [[ "$(id -u)" == 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
  fi
  .ci/venv.sh >/dev/null
}

db_dir=""
s3_dir=""
# Starts MariaDB and PostgreSQL (tests/db/servers.sh) and Ceph's RADOS Gateway
# (tests/s3/rgw.sh), and exports where they listen.
start_servers() {
  db_dir="$(mktemp -d /tmp/glance-db.XXXXXX)"
  s3_dir="$(mktemp -d /tmp/glance-s3.XXXXXX)"
  tests/db/servers.sh start "${db_dir}" >/dev/null || return 1
  tests/s3/rgw.sh start "${s3_dir}" >/dev/null || return 1
  set -a
  # shellcheck source=/dev/null
  source "${db_dir}/env"
  # shellcheck source=/dev/null
  source "${s3_dir}/env"
  set +a
}
stop_servers() {
  if [[ -n "${db_dir}" ]]; then
    tests/db/servers.sh stop "${db_dir}" >/dev/null 2>&1 || true
    rm -rf -- "${db_dir}"
  fi
  if [[ -n "${s3_dir}" ]]; then
    tests/s3/rgw.sh stop "${s3_dir}" >/dev/null 2>&1 || true
    rm -rf -- "${s3_dir}"
  fi
}
trap stop_servers EXIT

# Runs the test targets that use a catalogue on the backend $1 (mysql, postgresql).
tests_on() {
  GLANCE_TEST_DATABASE="$1" tests api catalogue glance_manage centralized_cache keystone_api bad_input replicas import metadefs
}

# Runs the test suite, or only the named test targets.
tests() {
  local targets=()
  local name
  for name in "$@"; do targets+=(--test "${name}"); done
  # Tests that need a server of their own (the S3 ones) are #[ignore]d, so that
  # `cargo test` passes on a fresh clone; this script starts the servers and runs them.
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast --run-ignored all "${targets[@]}"
  else
    cargo test --locked --no-fail-fast "${targets[@]}" -- --include-ignored
  fi
}

crds_fresh() {
  cargo run --quiet --locked --bin crdgen | diff -u crds/glance.yaml - \
    || { echo "crds/ is stale: cargo run --bin crdgen > crds/glance.yaml"; return 1; }
}

kustomize_renders() {
  local dir
  for dir in config/default samples/base samples/image-cache samples/ceph-s3 samples/keystone; do
    kubectl kustomize "${dir}" >/dev/null || return 1
  done
}

linters() {
  .venv/bin/shellcheck tests/run.sh .ci/run .ci/venv.sh benches/upstream/*.sh \
    tests/acceptance/glanceclient.sh tests/acceptance/defaults.sh \
    tests/e2e/kind.sh tests/db/servers.sh \
    tests/lib/daemons.sh tests/s3/rgw.sh tests/keystone/keystone.sh tests/keystone/compare.sh \
    tests/compat/shared_database.sh tests/compat/shared_s3.sh tests/compat/common.sh \
    tests/tempest/run.sh \
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
step "servers (MariaDB, PostgreSQL, Ceph RADOS Gateway)" start_servers
step "tests (catalogue on SQLite)" tests
step "tests on MariaDB" tests_on mysql
step "tests on PostgreSQL" tests_on postgresql
step "upstream Glance 33 and glance-api on one database and store" tests/compat/shared_database.sh
step "upstream Glance 33 and glance-api on one database and S3 bucket" tests/compat/shared_s3.sh
step "upstream Glance 33 and glance-api behind one Keystone" tests/keystone/compare.sh
step "Tempest's image API tests on upstream Glance 33 and glance-api" tests/tempest/run.sh
step "acceptance: python-glanceclient" tests/acceptance/glanceclient.sh
step "acceptance: README walk-through on the embedded defaults" tests/acceptance/defaults.sh
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
