#!/usr/bin/env bash
# vegeta, the gateway benchmark's load generator, built with the machine's Go from the Go
# module proxy, no root.
#
#   scripts/install-vegeta.sh     prints the directory holding `vegeta`
#
# The gateway's latency is measured at a fixed request rate (open loop: requests go out on
# schedule whether or not earlier ones were answered). A Python load generator costs as much
# CPU per request as the gateway itself and its own pauses land in the figures; vegeta (Go)
# does not. `go install github.com/tsenart/vegeta/v12@$VEGETA_VERSION` into
# $TOOLS_CACHE_DIR/vegeta-<version>/bin (default .cache/tools); a marker makes the next call
# instant.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${TOOLS_CACHE_DIR:-$root/.cache/tools}
version=${VEGETA_VERSION:-v12.13.0}
dest=$cache/vegeta-$version
marker=$dest/.installed
if [[ -f $marker ]]; then
    echo "$dest/bin"
    exit 0
fi
command -v go >/dev/null || { echo "install-vegeta: needs Go (go install)" >&2; exit 1; }
mkdir -p "$dest"
GOBIN=$dest/bin CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/tsenart/vegeta/v12@$version" >&2
"$dest/bin/vegeta" -version >"$marker"
echo "$dest/bin"
