#!/usr/bin/env bash
# Usage: cli_completion_test.sh TESHIM COMPLETION_FILE
# The bash completion offers every subcommand the command has (and no
# other), every parameter name after --set, the shipped profiles after
# --profile, each subcommand's options, and commands after `--`.
set -euo pipefail
teshim=$1
# shellcheck source=/dev/null
. "$2"
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# comp WORD... : what completing the last word offers, one per line, sorted.
comp() {
    COMP_WORDS=("$teshim" "$@")
    COMP_CWORD=$#
    COMPREPLY=()
    _teshim
    [ ${#COMPREPLY[@]} -eq 0 ] || printf '%s\n' "${COMPREPLY[@]}" | sort
}

# Subcommands: those `teshim --help` lists.
want=$("$teshim" --help | awk '/^commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}' | sort)
[ -n "$want" ] || fail "no commands in teshim --help"
got=$(comp "" | grep -v -- '^-' | grep -vx help)
[ "$got" = "$want" ] || fail "subcommands offered: $(echo "$got" | tr '\n' ' '), the command has: $(echo "$want" | tr '\n' ' ')"
[ "$(comp ru)" = run ] || fail "'ru' does not complete to run"

# Parameter names after --set, each with its '='.
keys=$("$teshim" config --keys | sort)
[ "$(comp run --set "" | sed 's/=$//')" = "$keys" ] || fail "--set does not offer every parameter"
[ "$(comp run --set rdma.traffic)" = "rdma.traffic_class=" ] || fail "rdma.traffic does not complete"
[ "$(comp config --set tcp.por)" = "tcp.ports=" ] || fail "tcp.por does not complete in config"
[ "$(comp ab --profile tcp)" = "tcp-qos" ] || fail "--profile tcp does not complete to tcp-qos"

# Options of each subcommand, from its own list.
[ "$(comp config --ch)" = "--check" ] || fail "config --ch"
[ "$(comp run --fo)" = "--force" ] || fail "run --fo"
[ "$(comp stats --li)" = "--live" ] || fail "stats --li"
# Every option offered for run/config appears in that command's --help.
for sub in run config stats demo; do
    for o in $(comp "$sub" -); do
        [ "$o" = "--" ] || [ "$o" = "--help" ] || "$teshim" "$sub" --help | grep -q -- "$o" ||
            fail "$sub: completion offers $o, which $sub --help does not name"
    done
done
# After `--`, a command, then files.
comp run --profile rdma-ro-tc -- "s" | grep -qx sh || fail "no command offered after --"
echo "bash completion: ok"
