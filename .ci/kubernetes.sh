#!/usr/bin/env bash
# A Kubernetes control plane for the tests: kube-apiserver, kube-controller-manager and
# kube-scheduler built from Debian's source package (no Kubernetes binary is in any registry
# reachable here), and Debian's etcd. Built once per machine: the binaries are cached outside the
# clone, keyed by version, and a warm run only prints their folder. Prints the folder of the
# binaries (etcd included) on stdout; everything else goes to stderr.
set -euo pipefail
VERSION=1.20.2
DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
CACHE="${MLOPS_LAB_K8S_CACHE:-/var/cache/mlops-lab/kubernetes-$VERSION}"
BIN="$CACHE/bin"
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ] && [ -x "$BIN/etcd" ]; then
  echo "$BIN"
  exit 0
fi
log() { echo "[kubernetes] $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
if ! command -v go >/dev/null || ! command -v etcd >/dev/null || ! command -v openssl >/dev/null; then
  log "installing golang-go, etcd-server, openssl"
  apt-get install -y -q golang-go etcd-server openssl dpkg-dev >&2 || { apt-get update -q >&2; apt-get install -y -q golang-go etcd-server openssl dpkg-dev >&2; }
fi
# Source packages are off by default: the same entries as the binary ones, with Types: deb-src
# (so no mirror's name is written here).
SRC_LIST=/etc/apt/sources.list.d/mlops-lab-deb-src.sources
if [ ! -f "$SRC_LIST" ]; then
  sed -n 's/^Types: deb$/Types: deb-src/; p' /etc/apt/sources.list.d/debian.sources > "$SRC_LIST"
  apt-get update -q >&2
fi
WORK="$CACHE/build"
rm -rf "$WORK"
mkdir -p "$WORK" "$BIN"
cd "$WORK"
log "fetching the source package kubernetes=$DEB_VERSION"
apt-get source -q --download-only "kubernetes=$DEB_VERSION" >&2
dpkg-source -x --no-check ./*.dsc src >&2
export GOPATH="$WORK/go" GO111MODULE=off CGO_ENABLED=0 GOCACHE="$CACHE/gocache"  # GOPATH mode: module mode fails on this tree
mkdir -p "$GOPATH/src/k8s.io"
ln -s "$WORK/src" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
# The generated OpenAPI definitions are not in the tarball: generate them with the vendored tool
# over every package tagged for it.
log "generating pkg/generated/openapi"
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
# (as Kubernetes' own hack/update-codegen.sh: every package with the tag, on the package or a type)
dirs=$(grep -rl --include='*.go' --exclude='*_test.go' -e '+k8s:openapi-gen=' pkg staging/src/k8s.io vendor/k8s.io 2>/dev/null \
  | xargs -n1 dirname | sed -e 's|^staging/src/||' -e 's|^vendor/||' -e 's|^pkg/|k8s.io/kubernetes/pkg/|' | sort -u | paste -sd, -)
"$WORK/openapi-gen" --input-dirs "$dirs" --output-base "$GOPATH/src" \
  --output-package k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
  --go-header-file hack/boilerplate/boilerplate.generatego.txt --report-filename /dev/null >&2
ldflags="-X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion=v$VERSION -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMajor=1 -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMinor=20"
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  log "building $cmd (kube-apiserver takes several minutes)"
  go build -ldflags "$ldflags" -o "$BIN/$cmd" "./cmd/$cmd"
done
ln -sf "$(command -v etcd)" "$BIN/etcd"
rm -rf "$WORK"
log "built in $CACHE"
echo "$BIN"
