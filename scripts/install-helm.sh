#!/usr/bin/env bash
# Helm for the deploy checks, built with the machine's Go from the Go module proxy, no root.
#
#   scripts/install-helm.sh     prints the directory holding `helm`
#
# `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION` into $TOOLS_CACHE_DIR/helm-<version>/bin
# (default .cache/tools). The Go module and build caches are Go's own (GOMODCACHE, GOCACHE),
# so a second checkout builds from them. A marker file makes the next call instant.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${TOOLS_CACHE_DIR:-$root/.cache/tools}
version=${HELM_VERSION:-v3.22.0}
dest=$cache/helm-$version
marker=$dest/.installed
if [[ -f $marker ]]; then
    echo "$dest/bin"
    exit 0
fi
command -v go >/dev/null || { echo "install-helm: needs Go (go install)" >&2; exit 1; }
mkdir -p "$dest"
# The version Helm reports (and the Kubernetes version it renders for) come from ldflags in
# Helm's own release build; set the first one the same way.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
GOBIN=$dest/bin CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$version" >&2
"$dest/bin/helm" version --short >"$marker"
echo "$dest/bin"
