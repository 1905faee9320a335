#!/bin/sh
# teshim-bench with --location cuda:0 on the emulated runtime: a target
# serving device memory, initiators reading and writing it from host and
# from device memory. Fails when the bench cannot run or a request fails
# (teshim-bench exits non-zero then). Numbers are meaningless here.
# usage: cemu_bench_smoke.sh TESHIM_BENCH CUDART_LIB_DIR
set -eu
bench=$1
export LD_LIBRARY_PATH="$2${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
tmp=$(mktemp -d)
trap 'kill "$tpid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT INT TERM

"$bench" --mode target --listen 127.0.0.1:0 --location cuda:0 --buffer-size 32M \
    --io-threads 2 >"$tmp/target" 2>&1 &
tpid=$!
for _ in $(seq 100); do grep -q listening "$tmp/target" && break; sleep 0.1; done
port=$(sed -n 's/^listening port \([0-9]*\) .*location cuda:0$/\1/p' "$tmp/target")
[ -n "$port" ] || { cat "$tmp/target" >&2; exit 1; }
for loc in cpu cuda:0; do
    for op in write read; do
        "$bench" --mode initiator --segment "127.0.0.1:$port" --operation $op \
            --block-size 256K --batch-size 8 --threads 2 --duration 0.5 --location $loc \
            >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; exit 1; }
        grep -q "^requests [1-9][0-9]* failed 0 " "$tmp/out" || { cat "$tmp/out" >&2; exit 1; }
        echo "$loc $op: $(tail -n 1 "$tmp/out")"
    done
done
# A worker that cannot allocate its buffer fails the run even when the
# others moved data: device memory for one 2 MiB buffer (256K x 8), two
# threads. The bench must exit non-zero and say which thread failed.
if CEMU_DEVICE_BYTES=3145728 "$bench" --mode initiator --segment "127.0.0.1:$port" \
    --operation write --block-size 256K --batch-size 8 --threads 2 --duration 0.3 \
    --location cuda:0 >"$tmp/out" 2>&1; then
    echo "teshim-bench exited 0 though a worker could not allocate:" >&2
    cat "$tmp/out" >&2
    exit 1
fi
grep -q "^teshim-bench: thread [01]: Cannot allocate memory" "$tmp/out" || { cat "$tmp/out" >&2; exit 1; }
grep -q "^requests [1-9][0-9]* failed 0 " "$tmp/out" || { cat "$tmp/out" >&2; exit 1; }
echo "one worker without memory: exit non-zero"
