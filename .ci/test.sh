#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, start the services the tests need
# (PostgreSQL), run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh dev
MLOPS_LAB_TEST_PG_URL="$(bash .ci/postgres.sh)"
export MLOPS_LAB_TEST_PG_URL
exec .venv/bin/python -m pytest "$@"
