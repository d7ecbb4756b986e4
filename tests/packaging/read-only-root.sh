#!/usr/bin/env bash
# Run a command as a container with a read-only root filesystem runs it (`docker run --read-only
# --tmpfs /tmp -v data:/var/lib/gitamp`), without a container engine: in a private mount
# namespace every mount but /proc, /sys and /dev becomes read-only, then only DATA and TMP are
# bound back writable and TMPDIR points at TMP.
#
#   tests/packaging/read-only-root.sh DATA TMP COMMAND [ARG...]
#
# Needs root or unprivileged user namespaces (unshare from util-linux).
set -euo pipefail

if [[ "${1:-}" != --inside ]]; then
    [[ $# -ge 3 ]] || { echo "usage: $0 DATA TMP COMMAND [ARG...]" >&2; exit 2; }
    userns=()
    [[ "$(id -u)" == 0 ]] || userns=(--map-root-user)
    exec unshare "${userns[@]}" --mount --propagation private "$0" --inside "$@"
fi
shift
data="$(realpath "$1")"
tmp="$(realpath "$2")"
shift 2

# Parents before children (sorted), so a child's remount is not undone by its parent's.
findmnt --raw --noheadings --output TARGET | LC_ALL=C sort | while IFS= read -r target; do
    target="$(printf '%b' "$target")" # findmnt escapes spaces as \x20
    case "$target" in
    /proc | /proc/* | /sys | /sys/* | /dev | /dev/*) continue ;;
    esac
    mount -o remount,bind,ro "$target"
done
mount --bind "$data" "$data"
mount --bind "$tmp" "$tmp"
mount -o remount,bind,rw "$data"
mount -o remount,bind,rw "$tmp"

# Prove the premise: the data folder's parent (anywhere else) is read-only now.
if touch "$(dirname "$data")/.read-only-probe" 2>/dev/null; then
    rm -f "$(dirname "$data")/.read-only-probe"
    echo "read-only-root: $(dirname "$data") is still writable" >&2
    exit 3
fi
export TMPDIR="$tmp"
exec "$@"
