#!/usr/bin/env bash
# Two API servers under the same load at once: each one's CPU per request, and B's over A's.
# bench/floor/pair.sh PID_A URL_A LUA_A PID_B URL_B LUA_B [SECONDS]
# PID: the server's process (its children are counted too); URL: where wrk sends (the floor
# apps answer at /t);
# LUA: wrk's script for that server: bench/floor/same_work.lua for the floor apps,
# bench/floor/tally_submit.lua for Tally's API (it reads TALLY_KEY and TALLY_WALLETS).
# On a shared machine whose speed drifts within minutes, two servers measured at the
# same time see the same machine: compare them by the ratio, never by the microseconds.
set -euo pipefail
A=$1; UA=$2; LA=$3; B=$4; UB=$5; LB=$6; D=${7:-8}
. "$(dirname "$0")/proc.sh"
count() { grep -o "[0-9]* requests in" "$1" | tr -dc 0-9; }
wrk -t1 -c16 -d2s -s "$LA" "$UA" > /dev/null & wrk -t1 -c16 -d2s -s "$LB" "$UB" > /dev/null; wait  # warm up
a0=$(tree_ticks "$A"); b0=$(tree_ticks "$B")
out_a=$(mktemp); out_b=$(mktemp); trap 'rm -f "$out_a" "$out_b"' EXIT
wrk -t1 -c16 -d"${D}s" -s "$LA" "$UA" > "$out_a" & wrk -t1 -c16 -d"${D}s" -s "$LB" "$UB" > "$out_b"; wait
a1=$(tree_ticks "$A"); b1=$(tree_ticks "$B")
na=$(count "$out_a"); nb=$(count "$out_b"); hz=$(getconf CLK_TCK)
python3 -c "a=($a1-$a0)/$hz/$na*1e6; b=($b1-$b0)/$hz/$nb*1e6; print(f'A {$na/$D:.0f}/s {a:.0f} us/req   B {$nb/$D:.0f}/s {b:.0f} us/req   B/A {b/a:.3f}')"
grep -h "Non-2xx" "$out_a" "$out_b" || true
