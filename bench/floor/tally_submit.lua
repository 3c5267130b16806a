-- wrk script: single transfers to Tally's POST /v1/transactions, each with a fresh Idempotency-Key.
-- TALLY_KEY: a service key; TALLY_WALLETS: a file of funded SGD wallet ids, one per line
-- (psql -Atc "select id from wallets where not is_system and currency = 'SGD' limit 200");
-- TALLY_PATH: where to post (default /v1/transactions; a floor app's is /t).
-- Each of wrk's threads runs its own copy of this script with the same unseeded random numbers:
-- setup() numbers the threads, so that two threads never send the same key (with -t2 and no
-- thread number, half the submissions were replays of the other thread's).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
local ids = {}
for line in io.lines(os.getenv("TALLY_WALLETS")) do ids[#ids + 1] = line end
local path = os.getenv("TALLY_PATH") or "/v1/transactions"
local prefix
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TALLY_KEY")
request = function()
  prefix = prefix or (tostring(os.time()) .. "-" .. tostring(thread_number or 0) .. "-" .. tostring(math.random(1, 1e9)))
  n = n + 1
  local a = math.random(1, #ids)
  local b = a % #ids + 1
  local body = '{"type":"transfer","source_wallet_id":"' .. ids[a] .. '","destination_wallet_id":"'
    .. ids[b] .. '","amount":"0.01","currency":"SGD"}'
  wrk.headers["Idempotency-Key"] = prefix .. "-" .. n
  return wrk.format("POST", path, nil, body)
end
