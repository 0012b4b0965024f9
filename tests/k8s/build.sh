#!/usr/bin/env bash
# Builds the real Kubernetes control plane the k8s_real tests run against, from Go modules:
# kube-apiserver, etcd and the helm CLI, pinned, into a cache outside the work tree keyed by
# version. A no-op when the binaries are already there. Prints the bin directory on stdout.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE=${VIP_SIDECAR_K8S_CACHE:-/var/cache/vip-sidecar/k8s}
BIN="$CACHE/bin"
mkdir -p "$BIN"
# one build at a time (parallel test runs call this too)
exec 9>"$CACHE/.lock"
flock 9
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "k8s-build: no go toolchain on PATH" >&2; exit 1; }

log() { echo "k8s-build: $*" >&2; }

# A throwaway module per build, so nothing lands in the work tree.
scratch() {
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/vip-sidecar-gobuild.XXXXXX")
  (cd "$d" && go mod init vip-sidecar.invalid/build >/dev/null 2>&1)
  echo "$d"
}

build_apiserver() {
  local out="$BIN/kube-apiserver-$K8S_VERSION"
  [[ -x "$out" ]] && return 0
  log "kube-apiserver $K8S_VERSION (cold: several minutes)"
  local d modfile minor patch
  d=$(scratch)
  cd "$d"
  modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  patch=${K8S_VERSION##*.}
  # k8s.io/kubernetes maps each staging module to ./staging/...; a dependent module does not
  # inherit those replace lines, so point each at its published v0.<minor>.<patch>.
  local staged
  staged=$(sed -n -E 's#^[[:space:]]*(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\1#p' "$modfile")
  [[ -n "$staged" ]] || { log "no staging replaces found in $modfile"; exit 1; }
  local args=()
  for m in $staged; do args+=("-replace=$m=$m@v0.$minor.$patch"); done
  go mod edit "${args[@]}"
  local godebug
  godebug=$(sed -n -E 's/^godebug[[:space:]]+(.*)$/\1/p' "$modfile")
  [[ -n "$godebug" ]] && go mod edit "-godebug=$godebug"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >&2
  local pkg=k8s.io/component-base/version
  go build -trimpath -o "$out.tmp" -ldflags "-s -w \
    -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
    -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" \
    k8s.io/kubernetes/cmd/kube-apiserver >&2
  mv "$out.tmp" "$out"
  cd / && rm -rf "$d"
}

build_etcd() {
  local out="$BIN/etcd-$ETCD_VERSION"
  [[ -x "$out" ]] && return 0
  log "etcd $ETCD_VERSION"
  local d
  d=$(scratch)
  cd "$d"
  # etcd's server module has replace lines, so `go install` refuses it; its root is the main package.
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -trimpath -o "$out.tmp" -ldflags "-s -w" go.etcd.io/etcd/server/v3 >&2
  mv "$out.tmp" "$out"
  cd / && rm -rf "$d"
}

build_helm() {
  local out="$BIN/helm-$HELM_VERSION"
  [[ -x "$out" ]] && return 0
  log "helm $HELM_VERSION"
  local d
  d=$(scratch)
  GOBIN="$d/bin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mv "$d/bin/helm" "$out"
  rm -rf "$d"
}

build_etcd
build_helm
build_apiserver
ln -sf "kube-apiserver-$K8S_VERSION" "$BIN/kube-apiserver"
ln -sf "etcd-$ETCD_VERSION" "$BIN/etcd"
ln -sf "helm-$HELM_VERSION" "$BIN/helm"
echo "$BIN"
