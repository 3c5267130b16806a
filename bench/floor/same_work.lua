wrk.method = "POST"
wrk.body = '{"type":"transfer","source_wallet_id":"4f1c2b2e-1111-4a4a-9a9a-000000000001","destination_wallet_id":"4f1c2b2e-1111-4a4a-9a9a-000000000002","amount":"0.01","currency":"SGD"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer floor-key"
