#!/bin/sh
# dlsym(RTLD_NEXT) from a library under teshim's dlsym hook finds the next
# definition after that library: linked, and preloaded after teshim.
# usage: tshim_rnext_test.sh HOST WRAPLIB LIBTESHIM
set -u
host=$1 wrap=$2 teshim=$3
plain=$("$host") || exit 1
[ "$plain" = 11 ] || { echo "plain run: $plain"; exit 1; }
got=$(TESHIM_CONFIG=/dev/null LD_PRELOAD="$teshim" "$host" 2>/dev/null)
[ "$got" = 11 ] || { echo "linked wrapper under teshim: '$got'"; exit 1; }
got=$(TESHIM_CONFIG=/dev/null LD_PRELOAD="$teshim $wrap" "$host" 2>/dev/null)
[ "$got" = 11 ] || { echo "preloaded wrapper under teshim: '$got'"; exit 1; }
echo ok
