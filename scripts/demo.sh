#!/usr/bin/env bash
# The main job: builds what is needed and runs `teshim demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh demo
scripts/build.sh >/dev/null
exec "${TESHIM_BUILD_DIR:-build}/bin/teshim" demo "$@"
