#!/bin/sh
# An application linked (BIND_NOW) against the installed NVIDIA libcudart
# runs against the emulation, plain and under teshim. Skipped (77) where the
# real runtime is not installed.
# usage: cemu_host_real_test.sh HOST EMULATED_LIB_DIR TESHIM_LIB
host=$1 emu=$2 shim=$3
[ -x "$host" ] || { echo "SKIP: no host linked against the installed runtime"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
set -e
LD_LIBRARY_PATH=$emu "$host" > "$tmp/plain"
cat "$tmp/plain"
grep -qx 'cudaGetDeviceProperties cudaErrorNotSupported' "$tmp/plain"
grep -qx 'last error cudaErrorNotSupported' "$tmp/plain"
grep -qx 'copy ok' "$tmp/plain"
env LD_LIBRARY_PATH=$emu LD_PRELOAD=$shim TESHIM_CONFIG=/dev/null TESHIM_STATS_LIVE=off \
    TESHIM_CUDA_BOUNCE=on TESHIM_STATS_DIR="$tmp/stats" "$host" > "$tmp/shim"
cmp "$tmp/plain" "$tmp/shim"
grep -q '"cudaMemcpy@libcudart.so.13": {"calls": 2, "injected": 2,' "$tmp"/stats/*.json
echo "OK: loads against the emulation; 2 copies routed by teshim"
