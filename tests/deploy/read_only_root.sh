#!/bin/sh
# Runs Python as the container runs under the chart's securityContext: the root filesystem
# read-only except the state dir $READ_ONLY_ROOT_WRITABLE and /tmp (the chart's emptyDir).
# The colon-separated $READ_ONLY_ROOT_PATHS (the checkout, the venv) are made read-only too,
# also when they lie under /tmp. A private mount namespace (unshare: as root, or in a user
# namespace where unprivileged ones are allowed), so nothing outside this process changes.
# Used in place of the Python executable:
#   READ_ONLY_ROOT_WRITABLE=/path/state READ_ONLY_ROOT_PYTHON=/path/python \
#   READ_ONLY_ROOT_PATHS=/path/checkout read_only_root.sh -m worker run
set -eu
: "${READ_ONLY_ROOT_WRITABLE:?the writable state dir}" "${READ_ONLY_ROOT_PYTHON:?the Python to run}"
exec unshare --map-root-user --mount sh -c '
    set -e
    # a writable mount of the state dir, held open to re-attach it on top of the rest
    mount --bind "$READ_ONLY_ROOT_WRITABLE" "$READ_ONLY_ROOT_WRITABLE"
    exec 3<"$READ_ONLY_ROOT_WRITABLE"
    mount --bind /tmp /tmp
    mount -o remount,bind,ro /
    old_ifs=$IFS; IFS=:
    for path in ${READ_ONLY_ROOT_PATHS:-}; do
        [ -n "$path" ] || continue
        mount --bind "$path" "$path"
        mount -o remount,bind,ro "$path"
    done
    IFS=$old_ifs
    mount --no-canonicalize --bind /proc/self/fd/3 "$READ_ONLY_ROOT_WRITABLE"
    exec 3<&-
    if touch /.read-only-root-probe 2>/dev/null; then
        echo "read_only_root.sh: / is still writable" >&2
        exit 98
    fi
    exec "$READ_ONLY_ROOT_PYTHON" "$@"' read_only_root "$@"
