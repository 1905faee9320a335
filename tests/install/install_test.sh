#!/bin/sh
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
# `cmake --install` of this build into a fresh prefix yields a tree that a
# program builds against with pkg-config and with find_package(TeshimEngine),
# links to the shared engine and runs; the installed command finds its
# libteshim.so through the install layout, and says where it looked when the
# library is gone.
set -eu
build=$(realpath "$1")
src=$(realpath "$2")
here=$src/tests/install
tmp=$(mktemp -d "${TMPDIR:-/tmp}/teshim-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

p=$tmp/prefix
cmake --install "$build" --prefix "$p" >"$tmp/install.log" || fail "cmake --install: $(cat "$tmp/install.log")"
pc=$(find "$p" -name teshim-engine.pc 2>/dev/null || true)
[ -n "$pc" ] || fail "no teshim-engine.pc installed"
[ -x "$p/bin/teshim" ] || fail "no bin/teshim installed"
lib=$(find "$p" -path '*/teshim/libteshim.so' 2>/dev/null || true)
[ -n "$lib" ] || fail "no libteshim.so installed under a teshim/ folder"
[ -f "$p/include/teshim/engine.h" ] || fail "no include/teshim/engine.h"

# pkg-config: the flags point into the prefix installed to.
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir teshim-engine)
[ "$(pkg-config --modversion teshim-engine)" = "$(sed -n 's/^project(teshim VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")" ] ||
    fail "pkg-config version differs from the project's"
case $libdir in "$p"/*) ;; *) fail "libdir $libdir is not under $p" ;; esac
# shellcheck disable=SC2046 # the flags are words
cc -o "$tmp/prog" "$here/install_prog.c" $(pkg-config --cflags teshim-engine) \
    $(pkg-config --libs teshim-engine) || fail "cannot build against pkg-config teshim-engine"
readelf -d "$tmp/prog" | grep -q 'NEEDED.*\[libteshim_engine\.so\.0\]' ||
    fail "the program does not need libteshim_engine.so.0"
LD_LIBRARY_PATH=$libdir "$tmp/prog" | grep -q '^engine served on port [1-9]' ||
    fail "the program built with pkg-config did not run"
readelf -d "$libdir/libteshim_engine.so.0" | grep -q 'SONAME.*\[libteshim_engine\.so\.0\]' ||
    fail "the installed engine's SONAME is not libteshim_engine.so.0"
# The version script: the engine exports its API and nothing else.
other=$(nm -D --defined-only "$libdir/libteshim_engine.so.0" | awk '$3 !~ /^teshim_/ && $2 != "A" {print $3}')
[ -z "$other" ] || fail "the engine exports more than teshim_*: $other"

# The CMake package and its imported target.
cmake -S "$here/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$p" -DPROG="$here/install_prog.c" \
    >"$tmp/consumer.log" 2>&1 || fail "find_package(TeshimEngine): $(cat "$tmp/consumer.log")"
cmake --build "$tmp/consumer" >>"$tmp/consumer.log" 2>&1 || fail "consumer build: $(cat "$tmp/consumer.log")"
"$tmp/consumer/consumer" | grep -q '^engine served on port [1-9]' ||
    fail "the program built with find_package did not run"

# The installed command preloads the installed library, wherever the
# prefix is and whatever the build tree holds.
# shellcheck disable=SC2016 # expanded by the inner shell
out=$(env -u TESHIM_LIBRARY "$p/bin/teshim" run -- sh -c 'echo "$LD_PRELOAD"')
[ "$out" = "$(realpath "$lib")" ] || fail "installed teshim run preloads '$out', not $lib"
# Without it: exit 127 naming where it looked, for run and for demo.
mv "$lib" "$lib.away"
set +e
out=$(env -u TESHIM_LIBRARY "$p/bin/teshim" run -- true 2>&1)
st=$?
set -e
[ $st -eq 127 ] || fail "teshim run without libteshim.so exited $st"
echo "$out" | grep -q "libteshim.so not found (looked at $p/bin/" || fail "unclear message: $out"
set +e
out=$(env -u TESHIM_LIBRARY "$p/bin/teshim" demo --runs 1 2>&1)
st=$?
set -e
[ $st -eq 127 ] || fail "teshim demo without libteshim.so exited $st"
echo "$out" | grep -q "nothing to demonstrate without libteshim.so" || fail "unclear demo message: $out"
# TESHIM_LIBRARY names it anywhere.
# shellcheck disable=SC2016 # expanded by the inner shell
out=$(TESHIM_LIBRARY="$lib.away" "$p/bin/teshim" run -- sh -c 'echo "$LD_PRELOAD"')
[ "$out" = "$(realpath "$lib.away")" ] || fail "TESHIM_LIBRARY not used: '$out'"
echo "install tree in a prefix: pkg-config, find_package, command lookup: ok"
