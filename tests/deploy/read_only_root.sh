#!/bin/sh
# Runs Python as the container runs under the chart's securityContext: the root filesystem
# read-only, only $READ_ONLY_ROOT_WRITABLE (the state dir) writable, and a fresh tmpfs on /tmp
# (the chart's emptyDir). A private mount namespace (unshare: as root, or in a user namespace
# where unprivileged ones are allowed) so nothing outside this process changes. Used in place
# of the Python executable:
#   READ_ONLY_ROOT_WRITABLE=/path/state READ_ONLY_ROOT_PYTHON=/path/python read_only_root.sh -m worker run
# The state dir may be under /tmp: it is bound to itself first and re-attached, through an
# open descriptor, on top of the new tmpfs.
set -eu
: "${READ_ONLY_ROOT_WRITABLE:?the writable state dir}" "${READ_ONLY_ROOT_PYTHON:?the Python to run}"
exec unshare --map-root-user --mount sh -c '
    set -e
    mount --bind "$READ_ONLY_ROOT_WRITABLE" "$READ_ONLY_ROOT_WRITABLE"
    exec 3<"$READ_ONLY_ROOT_WRITABLE"
    mount -o remount,bind,ro /
    mount -t tmpfs -o size=64m tmpfs /tmp
    mkdir -p "$READ_ONLY_ROOT_WRITABLE"
    mount --no-canonicalize --bind /proc/self/fd/3 "$READ_ONLY_ROOT_WRITABLE"
    exec 3<&-
    if touch /.read-only-root-probe 2>/dev/null; then
        echo "read_only_root.sh: / is still writable" >&2
        exit 98
    fi
    exec "$READ_ONLY_ROOT_PYTHON" "$@"' read_only_root "$@"
