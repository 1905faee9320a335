#!/usr/bin/env bash
# The test command: installs what is missing, builds with warnings as errors,
# checks formatting and the generated docs, and runs every Check suite.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TESHIM_BUILD_DIR:-build}

scripts/deps.sh test
scripts/build.sh -DTESHIM_WERROR=ON

# Formatting is part of the build contract (.clang-format).
if command -v clang-format >/dev/null; then
    git ls-files '*.c' '*.h' | xargs clang-format --dry-run -Werror
fi

cd "$build"
status=0
ctest --output-on-failure -j "$(nproc)" --timeout 600 || status=$?

# Check prints one summary line per suite; CTest keeps them in its log.
log=Testing/Temporary/LastTest.log
grep -hE '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | sed 's/^/check: /' || true
awk '/^[0-9]+%: Checks: /{gsub(",","");c+=$3;f+=$5;e+=$7} END{printf "Check totals: %d checks, %d failures, %d errors\n",c,f,e; printf "%d passed, %d failed\n", c-f-e, f+e}' "$log"
exit $status
