-- wrk: one chat completion per request, the same body for the mock and the gateway.
wrk.method = "POST"
wrk.body = '{"model":"mini","max_tokens":64,"messages":[{"role":"user","content":"Say hello to the fleet."}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
