#!/usr/bin/env bash
# The main job: builds what the demonstration needs and runs `teshim demo`.
# (scripts/test.sh builds and tests everything.)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TESHIM_BUILD_DIR:-build}
scripts/deps.sh demo
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target teshim teshim_cmd verbs_emu teshim-bench >/dev/null
exec "$build/bin/teshim" demo "$@"
