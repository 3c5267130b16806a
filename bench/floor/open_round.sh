#!/usr/bin/env bash
# One open-loop round against Tally's running API or a floor app, with each part's CPU a request:
# bench/floor/open_round.sh KIND RATE SECONDS WALLETS_FILE
# KIND is one of
#   tally    the API already serving at TALLY_URL (default http://127.0.0.1:8000), e.g. `tally up`,
#            with its key TALLY_KEY; its back end is the apply worker (`celery ... -Q tally`);
#   same     bench.floor.same_work (every stage of a submission) with bench.floor.apply_loop;
#   minimal  bench.floor.app (parse, one INSERT, commit) and no apply stream.
# A floor app runs as FLOOR_WORKERS (default 2, as `tally serve web`) uvicorn processes of
# FLOOR_THREADS (16) threads in Tally's pool, on port 9001, started and stopped by this round.
# bench.floor.open_loop sends RATE transfers a second among the funded wallets of WALLETS_FILE
# (one id a line) for SECONDS seconds; the line printed is its latency percentiles and the CPU
# a request of the server's process tree, of the back end's and of every PostgreSQL process
# (PGDATA_PATTERN, default "postgres -D", picks the postmaster). Alternate the kinds within
# one quarter hour: the machine's speed drifts, and only rounds run side by side compare.
set -euo pipefail
kind=$1; rate=$2; seconds=$3; wallets=$4
. "$(dirname "$0")/proc.sh"
postmaster=$(pgrep -f "${PGDATA_PATTERN:-postgres -D}" | head -1)
server=""; back=""
if [ "$kind" = tally ]; then
    url=${TALLY_URL:-http://127.0.0.1:8000}/v1/transactions; key=$TALLY_KEY
    port=${url#*//*:}; port=${port%%/*}
    server=$(pgrep -f "uvicorn api.asgi:app --host [^ ]* --port $port" | head -1)
    back=$(pgrep -f "celery -A worker.app worker .*-Q tally " | head -1)
else
    export FLOOR_DATABASE_URL=${FLOOR_DATABASE_URL:-postgresql://postgres@127.0.0.1:54329/floor}
    export FLOOR_THREADS=${FLOOR_THREADS:-16}
    if [ "$kind" = same ]; then
        python -m bench.floor.apply_loop "$wallets" > /tmp/floor-apply.log 2>&1 &
        back=$!
        until grep -q ready /tmp/floor-apply.log; do sleep 0.2; done
        app="--factory bench.floor.servers:same_work"
    else
        app="bench.floor.servers:pool"
    fi
    # shellcheck disable=SC2086  # $app is two words for the factory
    uvicorn $app --port 9001 --workers "${FLOOR_WORKERS:-2}" --no-access-log > /tmp/floor-open.log 2>&1 &
    server=$!
    until curl -s -o /dev/null http://127.0.0.1:9001/t; do sleep 0.2; done
    sleep 2  # every worker process has started
    url=http://127.0.0.1:9001/t; key=floor-key
fi
s0=$(tree_ticks "$server"); b0=$( [ -n "$back" ] && tree_ticks "$back" || echo 0 ); p0=$(pg_ticks "$postmaster")
out=$(python -m bench.floor.open_loop "$url" "$rate" "$seconds" --key "$key" --wallets "$wallets")
s1=$(tree_ticks "$server"); b1=$( [ -n "$back" ] && tree_ticks "$back" || echo 0 ); p1=$(pg_ticks "$postmaster")
if [ "$kind" != tally ]; then
    kill "$server" ${back:+"$back"}
    wait 2> /dev/null || true
fi
python3 -c "
hz, n = $(getconf CLK_TCK), $rate * $seconds
us = lambda a, b: round((b - a) / hz / n * 1e6)
print('$(date -u +%H:%M:%S) $kind $out | server', us($s0, $s1), 'back end', us($b0, $b1), 'PostgreSQL', us($p0, $p1), 'us a request')"
