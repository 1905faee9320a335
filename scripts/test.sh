#!/usr/bin/env bash
# The test command: installs what is missing, builds with warnings as errors,
# checks formatting and the generated docs, runs every Check suite, then the
# engine suites again under AddressSanitizer and ThreadSanitizer.
# TESHIM_SKIP_SANITIZERS=1 leaves the sanitizer runs out.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${TESHIM_BUILD_DIR:-build}

scripts/deps.sh test
scripts/build.sh -DTESHIM_WERROR=ON

# Formatting is part of the build contract (.clang-format).
if command -v clang-format >/dev/null && [ -d .git ]; then
    git ls-files '*.c' '*.h' | xargs clang-format --dry-run -Werror
fi

status=0
logs=()
rm -f "$build/Testing/Temporary/LastTestsFailed.log" # ctest leaves an old one
(cd "$build" && ctest --output-on-failure -j "$(nproc)" --timeout 600) || status=$?
logs+=("$build/Testing/Temporary/LastTest.log")

if [ "${TESHIM_SKIP_SANITIZERS:-0}" != 1 ]; then
    engine_tests=(check_engine_api check_engine_xfer check_engine_send check_engine_fault
                  check_engine_inject)
    for san in address thread; do
        sb="$root/build-$san"
        tests=("${engine_tests[@]}")
        # the engine's device paths and the copy component with its copy
        # threads, on the emulated CUDA runtime (built when the CUDA headers
        # are there); cuda_engine is kept out of TSan, see docs/testing.md
        if [ -f /usr/local/cuda/include/cuda_runtime_api.h ]; then
            case $san in
            address) tests+=(cuda_engine cuda_serve cuda_copy) ;;
            thread) tests+=(cuda_serve cuda_copy) ;;
            esac
        fi
        echo "== engine suites under ${san} sanitizer ($sb)"
        cmake -S . -B "$sb" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESHIM_WERROR=ON \
            -DTESHIM_SANITIZE="$san" >/dev/null
        cmake --build "$sb" -j "$(nproc)" --target "${tests[@]}" >/dev/null
        rm -f "$sb/Testing/Temporary/LastTestsFailed.log"
        (cd "$sb" && ctest --output-on-failure -j "$(nproc)" --timeout 600 \
            -R "^($(IFS='|'; echo "${tests[*]}"))\$") || status=$?
        logs+=("$sb/Testing/Temporary/LastTest.log")
    done
fi

# Check prints one summary line per suite; CTest keeps them in its logs.
grep -hE '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "${logs[@]}" |
    sed 's/^/check: /' || true
cat "${logs[@]}" | awk '/^[0-9]+%: Checks: /{gsub(",","");c+=$3;f+=$5;e+=$7}
    END{printf "Check totals: %d checks, %d failures, %d errors\n",c,f,e;
        printf "%d passed, %d failed\n", c-f-e, f+e}'
# On failure, repeat the failed assertions and tests last, where a CI log's
# tail shows them (a failing test's own output can be long).
if [ "$status" != 0 ]; then
    echo "== failures"
    grep -hE '^[^ ]+:[0-9]+:[FE]:' "${logs[@]}" | sed 's/^/failed check: /' || true
    for l in "${logs[@]}"; do
        f=$(dirname "$l")/LastTestsFailed.log
        if [ -f "$f" ]; then
            sed "s|^|failed test in ${l%/Testing/Temporary/LastTest.log}: |" "$f"
        fi
    done
fi
exit $status
