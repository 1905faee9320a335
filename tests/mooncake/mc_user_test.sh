#!/bin/sh
# Installs the mooncake component into a scratch DESTDIR, builds a program
# written against Mooncake's C API with `pkg-config teshim-mooncake` and with
# find_package(teshim-mooncake), and runs both (a two-process round trip).
# Usage: mc_user_test.sh BUILD_DIR PROGRAM.c
set -eu
build=$1
src=$2
tmp=$(mktemp -d /tmp/teshim-mc-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

DESTDIR=$tmp/root cmake --install "$build" --component mooncake >/dev/null
pc=$(find "$tmp/root" -name teshim-mooncake.pc)
[ -n "$pc" ] || { echo "teshim-mooncake.pc not installed"; exit 1; }
export PKG_CONFIG_PATH="${pc%/*}"
libdir=$(pkg-config --variable=libdir teshim-mooncake)

echo "== pkg-config: $(pkg-config --cflags --libs teshim-mooncake)"
# shellcheck disable=SC2046
cc -O2 -Wall -Wextra -Werror -o "$tmp/prog" "$src" $(pkg-config --cflags --libs teshim-mooncake) \
    -Wl,-rpath,"$libdir"
# Ten round trips: a task that read as finished while its batch still
# counted it made freeBatchID fail in about one run in five.
for _ in 1 2 3 4 5 6 7 8 9 10; do
    "$tmp/prog"
done

echo "== find_package(teshim-mooncake)"
mkdir "$tmp/proj"
cp "$src" "$tmp/proj/prog.c"
cat >"$tmp/proj/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(mooncake_user C)
find_package(teshim-mooncake REQUIRED)
add_executable(prog prog.c)
target_link_libraries(prog PRIVATE teshim::mooncake)
CMAKE

cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$tmp/root/usr/local" \
    -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$tmp/proj/build" >/dev/null
"$tmp/proj/build/prog" 65536
