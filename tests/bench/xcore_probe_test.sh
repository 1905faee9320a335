#!/bin/sh
# xcore-probe: one well-formed line per CPU pair, a matrix line for every
# other CPU, and a named error (exit 2) for each bad input.
P=$1
fail() { echo "FAIL: $*"; exit 1; }
# expect_error ARGS... -- MESSAGE: exit status 2 and MESSAGE on stderr
expect_error() {
    msg=$1; shift
    err=$("$@" 2>&1 >/dev/null); rc=$?
    [ $rc = 2 ] || fail "'$*' exited $rc, expected 2"
    case $err in *"$msg"*) ;; *) fail "'$*' said '$err', expected '$msg'" ;; esac
    echo "ok: '$*' refused: $err"
}
ncpu=$(nproc)
if [ "$ncpu" -lt 2 ]; then echo "one CPU: nothing to probe"; exit 77; fi
line=$("$P" --iterations 2000) || fail "xcore-probe exited $?"
echo "$line" | grep -Eqx 'xcore_round_trip_ns [0-9]+ [0-9]+ [0-9]+' || fail "bad line '$line'"
ns=${line##* }
[ "$ns" -gt 0 ] || fail "round trip of $ns ns"
echo "ok: $line"
rows=$("$P" --matrix --iterations 1000) || fail "--matrix exited $?"
n=$(echo "$rows" | grep -Ecx 'xcore_round_trip_ns [0-9]+ [0-9]+ [0-9]+')
[ "$n" = $((ncpu - 1)) ] || fail "--matrix printed $n rows for $ncpu CPUs: $rows"
echo "ok: --matrix, $n rows"
first=$(echo "$line" | cut -d' ' -f2) second=$(echo "$line" | cut -d' ' -f3)
line2=$("$P" --cpus "$second,$first" --iterations 1000) || fail "--cpus $second,$first exited $?"
case $line2 in "xcore_round_trip_ns $second $first "*) ;; *) fail "--cpus $second,$first printed '$line2'" ;; esac
echo "ok: $line2"
expect_error "names CPU $first twice" "$P" --cpus "$first,$first"
expect_error "CPU 1000 is not in this process's CPU set" "$P" --cpus "$first,1000"
expect_error "--cpus wants two CPU numbers" "$P" --cpus 1
expect_error "--cpus wants two CPU numbers" "$P" --cpus 0,x
expect_error "--iterations wants 1..100000000" "$P" --iterations 0
expect_error "--iterations wants 1..100000000" "$P" --iterations -5
expect_error "usage:" "$P" extra
if command -v taskset >/dev/null; then
    expect_error "may run on one CPU only" taskset -c "$first" "$P"
fi
echo "xcore-probe: all checks passed"
