#!/usr/bin/env bash
# Create (idempotently) a virtualenv holding upstream OpenStack Glance, so the
# benchmarks can run upstream's `glance-cache-pruner` against a cache directory
# built by make_cache.py, and serve upstream's API under uWSGI (glance_api.sh)
# for glanceclient / HTTP comparisons (with glance_store's s3 driver, which
# needs boto3). Prints the venv path on stdout.
set -euo pipefail

GLANCE_VERSION="33.0.0"
GLANCECLIENT_VERSION="4.13.0"
PYUWSGI_VERSION="2.0.30.post1"
# SQLAlchemy's drivers for MariaDB/MySQL and PostgreSQL URLs.
PYMYSQL_VERSION="1.2.4"
PSYCOPG2_VERSION="2.9.13"
# glance_store's s3 driver (tests/compat/shared_s3.sh). boto3 1.36 and later
# support the checksum options glance_store passes (when_required by default:
# no flexible checksums, which Ceph 16's radosgw does not understand).
BOTO3_VERSION="1.44.8"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
VENV="${ROOT}/target/upstream-glance-venv"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "${VENV}/bin/python" ]]; then
    "${PYTHON}" -m venv "${VENV}" >&2
fi

# Prints the installed version of distribution $1 in the venv (empty if none).
installed_version() {
    "${VENV}/bin/python" -m pip show "$1" 2>/dev/null \
        | sed -n 's/^Version: //p' || true
}

if [[ "$(installed_version glance)" != "${GLANCE_VERSION}" ]] \
    || [[ "$(installed_version python-glanceclient)" != "${GLANCECLIENT_VERSION}" ]] \
    || [[ "$(installed_version pyuwsgi)" != "${PYUWSGI_VERSION}" ]] \
    || [[ "$(installed_version PyMySQL)" != "${PYMYSQL_VERSION}" ]] \
    || [[ "$(installed_version psycopg2-binary)" != "${PSYCOPG2_VERSION}" ]] \
    || [[ "$(installed_version boto3)" != "${BOTO3_VERSION}" ]] \
    || [[ ! -x "${VENV}/bin/glance-cache-pruner" ]] \
    || [[ ! -x "${VENV}/bin/glance" ]] \
    || [[ ! -x "${VENV}/bin/uwsgi" ]]; then
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
        --upgrade pip setuptools >&2
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
        "glance==${GLANCE_VERSION}" \
        "python-glanceclient==${GLANCECLIENT_VERSION}" \
        "pyuwsgi==${PYUWSGI_VERSION}" \
        "PyMySQL==${PYMYSQL_VERSION}" \
        "psycopg2-binary==${PSYCOPG2_VERSION}" \
        "boto3==${BOTO3_VERSION}" >&2
fi

echo "${VENV}"
