#!/usr/bin/env bash
# The test command: installs what is missing, builds with warnings as errors,
# checks formatting and the generated docs, runs every Check suite, then the
# engine suites again under AddressSanitizer and ThreadSanitizer, then builds
# the Debian package (scripts/deb.sh), installs it, uses it as installed and
# removes it again.
# TESHIM_SKIP_SANITIZERS=1 leaves the sanitizer runs out; TESHIM_SKIP_DEB=1
# the package.
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
if command -v shellcheck >/dev/null && [ -d .git ]; then
    shellcheck scripts/deb.sh tests/install/*.sh tests/cli/*.sh tests/bench/*.sh tests/netns/netns-harness \
        bench/tcp-vs-iperf3 bench/manycore-check bench/netns-scale
    shellcheck -s bash shim/cmd/teshim.bash-completion
fi

status=0
logs=()
rm -f "$build/Testing/Temporary/LastTestsFailed.log" # ctest leaves an old one
(cd "$build" && ctest --output-on-failure -j "$(nproc)" --timeout 600) || status=$?
logs+=("$build/Testing/Temporary/LastTest.log")

if [ "${TESHIM_SKIP_SANITIZERS:-0}" != 1 ]; then
    engine_tests=(check_engine_api check_engine_xfer check_engine_send check_engine_recv check_engine_fault
                  check_engine_inject check_engine_etcd check_engine_hostile check_engine_local
                  check_engine_rdma_ib check_engine_rdma_roce)
    for san in address thread; do
        sb="$root/build-$san"
        tests=("${engine_tests[@]}")
        # the engine's device paths and the copy component with its copy
        # threads, on the emulated CUDA runtime (built when the CUDA headers
        # are there); cuda_engine is kept out of TSan, see docs/testing.md
        if [ -f /usr/local/cuda/include/cuda_runtime_api.h ]; then
            case $san in
            address) tests+=(cuda_engine cuda_engine_rdma cuda_serve cuda_copy) ;;
            thread) tests+=(cuda_engine_rdma cuda_serve cuda_copy) ;;
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

# The Debian package, as a user gets it: built by the project's script,
# installed, smoke-tested from the installed paths only, removed again so a
# repeated run starts clean. Needs root (or sudo) for dpkg.
deb_status=0
if [ "${TESHIM_SKIP_DEB:-0}" != 1 ]; then
    echo "== Debian package (scripts/deb.sh)"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if deb=$(scripts/deb.sh "$root/build-deb"); then
        # apt-get waits for the dpkg lock another installer may hold.
        if $sudo apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
            "$deb" >/dev/null; then
            tests/install/deb_smoke.sh "$root" || deb_status=$?
            $sudo apt-get remove -y -qq -o DPkg::Lock::Timeout=300 teshim >/dev/null || deb_status=$?
            if dpkg-query -W -f='${Status}' teshim 2>/dev/null | grep -q "ok installed"; then
                echo "teshim is still installed after removal" >&2
                deb_status=1
            fi
        else
            deb_status=1
        fi
    else
        deb_status=1
    fi
    [ $deb_status = 0 ] || { echo "failed: the Debian package"; status=1; }
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
