#!/usr/bin/env bash
# Install Debian's Chromium (if missing) for the JupyterLab UI tests; Playwright drives it and
# never downloads a browser of its own.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  echo "[chromium] installing from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq chromium >&2
fi
