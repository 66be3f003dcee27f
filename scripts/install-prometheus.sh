#!/usr/bin/env bash
# Prometheus and promtool for the deploy checks, from Debian's `prometheus` package, no root.
#
#   scripts/install-prometheus.sh     prints the directory holding `prometheus` and `promtool`
#
# The package is fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
# $TOOLS_CACHE_DIR/prometheus (default .cache/tools/prometheus); only the two binaries are kept.
# A marker file makes the next call instant. Without readable apt lists (a fresh machine that
# never ran `apt-get update`), a private `apt-get update` fills lists under the cache first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${TOOLS_CACHE_DIR:-$root/.cache/tools}
dest=$cache/prometheus
marker=$dest/.installed
if [[ -f $marker ]]; then
    echo "$dest/bin"
    exit 0
fi
for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "install-prometheus: needs $tool (Debian)" >&2; exit 1; }
done
mkdir -p "$cache"
work=$(mktemp -d "$cache/prometheus.tmp-XXXXXX")
trap 'rm -rf "$work"' EXIT

download() {
    (cd "$work" && apt-get download -q "$@" prometheus) >"$work/apt.log" 2>&1
}
if ! download; then
    # No usable package lists: make private ones (no root needed, nothing outside the cache).
    lists=$cache/apt/lists
    mkdir -p "$lists/partial" "$cache/apt/archives/partial"
    private=(-o "Dir::State::Lists=$lists" -o "Dir::Cache=$cache/apt" -o Debug::NoLocking=1)
    apt-get update -q "${private[@]}" >"$work/update.log" 2>&1 \
        || { cat "$work/update.log" >&2; echo "install-prometheus: apt-get update failed" >&2; exit 1; }
    download "${private[@]}" || { cat "$work/apt.log" >&2; exit 1; }
fi
deb=$(ls "$work"/prometheus_*.deb)
dpkg-deb -x "$deb" "$work/root"
rm -rf "$dest"
mkdir -p "$dest/bin"
cp "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$dest/bin/"
"$dest/bin/promtool" --version >/dev/null
dpkg-deb -f "$deb" Version >"$marker"
echo "$dest/bin"
