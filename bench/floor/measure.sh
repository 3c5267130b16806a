#!/usr/bin/env bash
# Server CPU per request of the floor app under one server: bench/floor/measure.sh LABEL COMMAND...
# COMMAND must listen on 127.0.0.1:9001. Needs wrk (Debian) and a PostgreSQL at
# FLOOR_DATABASE_URL. Prints requests/s, the server's CPU per request (its process
# tree's user + system time over wrk's 10 s) and the PostgreSQL backends' CPU per request.
# Example, from the repository's root with .venv/bin on PATH:
#   bench/floor/measure.sh pool uvicorn bench.floor.servers:pool --port 9001 --no-access-log
#   bench/floor/measure.sh a2wsgi uvicorn bench.floor.servers:a2wsgi --port 9001 --no-access-log
#   bench/floor/measure.sh granian-wsgi granian --interface wsgi --blocking-threads 8 --port 9001 bench.floor.app:app
# The same work as a Tally submission, stage by stage (bench/floor/same_work.py), in Tally's pool:
#   FLOOR_STAGES=auth,limits FLOOR_THREADS=16 FLOOR_AUTHORIZATION='Bearer floor-key' \
#     bench/floor/measure.sh same-work uvicorn --factory bench.floor.servers:same_work --port 9001 --no-access-log
set -euo pipefail
label=$1; shift
url=${FLOOR_DATABASE_URL:-postgresql://postgres@127.0.0.1:54329/floor}
export FLOOR_DATABASE_URL=$url
psql "${url%/*}/postgres" -qc "CREATE DATABASE floor" 2>/dev/null || true
psql "$url" -qc "CREATE TABLE IF NOT EXISTS floor_t (id uuid PRIMARY KEY, body jsonb, created_at timestamptz DEFAULT now())"
body='{"type":"transfer","source_wallet_id":"4f1c2b2e-1111-4a4a-9a9a-000000000001","destination_wallet_id":"4f1c2b2e-1111-4a4a-9a9a-000000000002","amount":"0.01","currency":"SGD"}'
script=$(mktemp --suffix=.lua)
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'$body'" > "$script"
if [ -n "${FLOOR_AUTHORIZATION:-}" ]; then
    printf 'wrk.headers["Authorization"] = "%s"\n' "$FLOOR_AUTHORIZATION" >> "$script"
fi
"$@" > "/tmp/floor-$label.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; rm -f "$script"' EXIT
for _ in $(seq 50); do
    curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' http://127.0.0.1:9001/t && break
    sleep 0.2
done
. "$(dirname "$0")/proc.sh"
backends() { pgrep -f "postgres: .* floor " || true; }
wrk -t1 -c16 -d3s -s "$script" http://127.0.0.1:9001/t > /dev/null  # warm up
s0=$(tree_ticks $server); p0=$(ticks $(backends))
out=$(wrk -t1 -c16 -d10s -s "$script" http://127.0.0.1:9001/t)
s1=$(tree_ticks $server); p1=$(ticks $(backends))
n=$(echo "$out" | grep -o "[0-9]* requests in" | tr -dc 0-9)
hz=$(getconf CLK_TCK)
python3 -c "n=$n; s=($s1-$s0)/$hz; p=($p1-$p0)/$hz; print(f'$label: {n/10:.0f} req/s, server {s/n*1e6:.0f} us/req, PostgreSQL {p/n*1e6:.0f} us/req')"
echo "$out" | grep -i "non-2xx" || true
