#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, start the services the tests need
# (PostgreSQL, a Docker engine with a locally made base image), the browser the UI tests drive
# (Chromium) and the Prometheus server the scrape test starts, run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh dev
bash .ci/chromium.sh
bash .ci/prometheus.sh
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
MLOPS_LAB_TEST_PG_URL="$(bash .ci/postgres.sh)"
export MLOPS_LAB_TEST_PG_URL
MLOPS_LAB_TEST_DOCKER_BASE="$(bash .ci/docker.sh)"
export MLOPS_LAB_TEST_DOCKER_BASE
exec .venv/bin/python -m pytest "$@"
