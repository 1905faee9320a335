#!/usr/bin/env bash
# Usage: deb_smoke.sh SOURCE_DIR
# With the teshim Debian package installed (scripts/test.sh installs it):
# the installed command preloads the installed library and applies a
# policy, the demo runs, the sample configuration checks clean, and a
# program builds against the engine with the system's pkg-config and CMake
# and runs without any path set.
set -euo pipefail
src=$(realpath "$1")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/teshim-deb-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# The installed package alone: no build or source tree, no library override.
unset TESHIM_SOURCE_DIR TESHIM_BUILD_DIR TESHIM_LIBRARY TESHIM_CONFIG
cd "$tmp"

dpkg-query -W -f='${Status}' teshim | grep -q "install ok installed" || fail "teshim is not installed"
[ "$(command -v teshim)" = /usr/bin/teshim ] || fail "teshim is not /usr/bin/teshim"
lib=$(dpkg -L teshim | grep '/teshim/libteshim\.so$')
case $lib in /usr/lib/*/teshim/libteshim.so | /usr/lib/teshim/libteshim.so) ;; *) fail "library at $lib" ;; esac
# shellcheck disable=SC2016 # expanded by the inner shell
[ "$(teshim run -- sh -c 'echo "$LD_PRELOAD"')" = "$lib" ] || fail "teshim run does not preload $lib"
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
[ "$needed" = "libc.so.6 " ] || fail "libteshim.so needs more than libc: $needed"

# A policy applied by the installed library, reported and read back.
set +e
teshim run --stats-dir "$tmp/st" --profile tcp-qos --set tcp.ports=1 -- \
    curl -s -m 5 http://127.0.0.1:1/ >/dev/null 2>&1
set -e
stats=$(teshim stats "$tmp/st") || fail "teshim stats DIR: $stats"
echo "$stats" | grep -q "curl pid .* gate enforce, .* profile tcp-qos" || fail "no report of curl: $stats"
echo "$stats" | grep -Eq "^  connect@GLIBC_[0-9.]+ +1 " || fail "connect not counted: $stats"

# The demo, quick: it needs only what is installed (and iperf3).
demo=$(teshim demo --runs 1 2>&1) || fail "teshim demo failed: $demo"
echo "$demo" | grep -q "arm B applied its policy in every run" || fail "the demo's policy did not apply: $demo"

teshim config --check /usr/share/doc/teshim/examples/teshim.conf >/dev/null ||
    fail "the installed sample configuration does not check clean"
for m in man1/teshim.1.gz man5/teshim.conf.5.gz; do
    dpkg -L teshim | grep -q "/usr/share/man/$m$" || fail "$m not in the package"
done
bash -c '. /usr/share/bash-completion/completions/teshim && complete -p teshim' >/dev/null ||
    fail "bash completion does not load"

# The engine, found through the system's search paths (ldconfig trigger).
ldconfig -p | grep -q 'libteshim_engine\.so\.0 ' || fail "libteshim_engine.so.0 not in the ld.so cache"
# shellcheck disable=SC2046 # the flags are words
cc -o prog "$src/tests/install/install_prog.c" $(pkg-config --cflags --libs teshim-engine) ||
    fail "cannot build with pkg-config teshim-engine"
./prog | grep -q '^engine served on port [1-9]' || fail "the program did not run"
if ! cmake -S "$src/tests/install/consumer" -B consumer -DPROG="$src/tests/install/install_prog.c" \
    >consumer.log 2>&1 || ! cmake --build consumer >>consumer.log 2>&1; then
    fail "find_package(TeshimEngine) from /usr: $(cat consumer.log)"
fi
consumer/consumer | grep -q '^engine served on port [1-9]' || fail "the CMake-built program did not run"
# The opt-in front ends: Mooncake's C API and the Python module.
pkg-config --exists teshim-mooncake || fail "pkg-config does not know teshim-mooncake"
[ -f "$(pkg-config --variable=includedir teshim-mooncake)/transfer_engine_c.h" ] ||
    [ -n "$(find /usr/include -name transfer_engine_c.h -print -quit)" ] ||
    fail "transfer_engine_c.h not installed"
(cd / && /usr/bin/python3 -c 'import teshim; teshim.TransferEngine') ||
    fail "the installed Python module does not import"
echo "Debian package: installed command, demo, sample config, engine via pkg-config and CMake, Mooncake C API, Python module: ok"
