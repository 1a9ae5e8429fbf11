#!/usr/bin/env bash
# Install Debian's Prometheus server (if missing) for the scrape tests, which start their own
# on loopback with a config they write. The package's own service is not started.
set -euo pipefail
if ! command -v prometheus >/dev/null 2>&1; then
  echo "[prometheus] installing from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # no service started at install (there is no init system to own it here)
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends prometheus >&2 || { rm -f /usr/sbin/policy-rc.d; exit 1; }
  rm -f /usr/sbin/policy-rc.d
fi
