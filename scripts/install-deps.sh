#!/bin/sh
# Installs the Debian packages mproc needs to build, test and benchmark, and only
# those that are missing. Idempotent; prints nothing when everything is present.
set -eu

packages="g++ make cmake pkg-config python3 libgtest-dev libgmock-dev \
libbenchmark-dev libfmt-dev libcli11-dev libopenmpi-dev openmpi-bin libtbb-dev zlib1g-dev"

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
