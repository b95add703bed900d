#!/bin/sh
# Installs the Debian packages mproc needs to build and run (`make run`), and with --test
# also those only the test suite uses: chromium-headless-shell (trace-view pages are
# rendered and looked at) and GNU parallel (`mproc run` is compared with it). Installs
# only what is missing. Idempotent; prints nothing when everything is present.
set -eu

usage() {
    echo "usage: scripts/install-deps.sh [--test]" >&2
    exit "$1"
}

with_tests=0
for arg in "$@"; do
    case "$arg" in
        --test) with_tests=1 ;;
        -h|--help) usage 0 ;;
        *) echo "install-deps: unknown argument '$arg'" >&2; usage 2 ;;
    esac
done

packages="g++ make cmake pkg-config python3 libgtest-dev libgmock-dev \
libbenchmark-dev libfmt-dev libcli11-dev nlohmann-json3-dev libopenmpi-dev openmpi-bin \
libtbb-dev zlib1g-dev libxxhash-dev"
if [ "$with_tests" -eq 1 ]; then
    packages="$packages chromium-headless-shell parallel"
fi

missing=""
for p in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages:$missing" >&2
    echo "install-deps: run as root, or: sudo apt-get install$missing" >&2
    exit 1
fi

echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq $missing >/dev/null
