#!/usr/bin/env bash
# Installs the Debian packages teshim's build, tests and demo need, when missing.
# Usage: scripts/deps.sh [build|test|demo]   (default: test)
set -euo pipefail

build_pkgs=(gcc make cmake pkg-config check libibverbs-dev libcurl4-openssl-dev libjson-c-dev)
test_pkgs=(ibverbs-utils perftest iperf3 sockperf socat curl tcpdump iproute2 procps gnuplot-nox
           clang libclang-rt-14-dev binutils dpkg-dev shellcheck python3-dev python3-numpy
           etcd-server etcd-client)
demo_pkgs=(ibverbs-utils perftest iperf3 socat procps)

case "${1:-test}" in
build) want=("${build_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
demo) want=("${build_pkgs[@]}" "${demo_pkgs[@]}") ;;
*) echo "usage: $0 [build|test|demo]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "teshim: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
