#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, start the services the tests need
# (PostgreSQL, a Docker engine with a locally made base image), the browser the UI tests drive
# (Chromium), the Prometheus server the scrape test starts and a Kubernetes control plane (built
# once per machine from Debian's source package, cached outside the clone), run pytest. Extra
# arguments go to pytest.
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
if MLOPS_LAB_TEST_K8S_BIN="$(bash .ci/kubernetes.sh)"; then
  export MLOPS_LAB_TEST_K8S_BIN
else
  echo "[test] the Kubernetes control plane did not build (see above): its tests are skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
