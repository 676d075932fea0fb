#!/usr/bin/env bash
# Create (idempotently) a virtualenv holding upstream OpenStack Glance, so the
# benchmark can run upstream's `glance-cache-pruner` against a cache directory
# built by make_cache.py. Prints the venv path on stdout.
set -euo pipefail

GLANCE_VERSION="33.0.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
VENV="${ROOT}/target/upstream-glance-venv"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "${VENV}/bin/python" ]]; then
    "${PYTHON}" -m venv "${VENV}" >&2
fi

installed="$("${VENV}/bin/python" -m pip show glance 2>/dev/null \
    | sed -n 's/^Version: //p' || true)"
if [[ "${installed}" != "${GLANCE_VERSION}" ]] \
    || [[ ! -x "${VENV}/bin/glance-cache-pruner" ]]; then
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
        --upgrade pip setuptools >&2
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
        "glance==${GLANCE_VERSION}" >&2
fi

echo "${VENV}"
