#!/bin/sh
# Install the Debian packages a system test needs (the test's services: postgresql, slurm-wlm, munge, ...), once.
# Usage: tests/services/install.sh PACKAGE...
# Packages dpkg already holds as installed are skipped; the rest are installed with apt-get (its lists updated once
# per call, no recommended packages). Prints one line and exits non-zero when it cannot: not root, apt-get failing,
# no apt-get. Run by the tests' fixtures (tests/services/) and usable by hand or from make.
set -u

if [ "$#" -eq 0 ]; then
    echo "usage: $0 PACKAGE..." >&2
    exit 2
fi

missing=""
for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: cannot install${missing}: not root (run it as root, or install them with the package manager)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$0: cannot install${missing}: no apt-get on this system (a Debian or Ubuntu package name was asked for)" >&2
    exit 1
fi

log=$(mktemp "${TMPDIR:-/tmp}/p2m-install.XXXXXX") || exit 1
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive

# the first error apt-get printed (else its last line): the one line this script says when apt-get fails
first_error() {
    line=$(grep -m 1 -E '^(E|Err):' "$log")
    [ -n "$line" ] || line=$(tail -n 1 "$log")
    echo "$line"
}

if ! apt-get update >"$log" 2>&1; then
    echo "$0: apt-get update failed: $(first_error)" >&2
    exit 1
fi
# shellcheck disable=SC2086  # the package names are split on purpose
if ! apt-get install -y --no-install-recommends $missing >"$log" 2>&1; then
    echo "$0: apt-get install${missing} failed: $(first_error)" >&2
    exit 1
fi
