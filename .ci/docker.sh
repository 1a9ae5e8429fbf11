#!/usr/bin/env bash
# A Docker engine for the Docker deployer's tests, and a base image made without any registry
# (no image can be pulled here): Debian's docker.io, then `debootstrap` + `docker import`.
# Idempotent: an engine or image already made by this script is reused.
# Prints the name of the base image.
set -euo pipefail
DATA="${MLOPS_LAB_TEST_DOCKER_DATA:-/tmp/mlops-lab-docker}"
BASE="${MLOPS_LAB_TEST_DOCKER_BASE:-mlops-lab-test-base:bookworm}"
log() { echo "[docker] $*" >&2; }
export DEBIAN_FRONTEND=noninteractive

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  log "installing docker.io and debootstrap from Debian's packages"
  apt-get update -qq >&2
  apt-get install -y -qq docker.io debootstrap >"$DATA.apt.log" 2>&1 || { tail -20 "$DATA.apt.log" >&2; exit 1; }
fi
DOCKER=/usr/bin/docker  # the client that matches Debian's engine
mkdir -p "$DATA"
if ! "$DOCKER" info >/dev/null 2>&1; then
  log "starting dockerd (data in $DATA)"
  nohup dockerd --data-root "$DATA/root" --pidfile "$DATA/dockerd.pid" >"$DATA/dockerd.log" 2>&1 &
  for _ in $(seq 1 100); do
    "$DOCKER" info >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$DATA/dockerd.log" >&2; exit 1; }
fi
if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true) \
           | grep -oE '^(URIs:|deb) *https?://[^ ]+' | grep -oE 'https?://[^ ]+' | head -n 1 || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$DATA/rootfs"
  rm -rf "$rootfs"
  log "making $BASE with debootstrap from $mirror (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" >"$DATA/debootstrap.log" 2>&1 \
    || { tail -20 "$DATA/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc "$rootfs"/usr/share/man
  tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE" >&2
  rm -rf "$rootfs"
fi
echo "$BASE"
