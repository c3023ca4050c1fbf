-- wrk script of bench/relay/run: POSTs the file BODY_FILE to the relay's ingest
-- endpoint with the key RELAY_KEY, on every request. The body is read once per
-- wrk thread; no per-response callback, so wrk itself stays cheap (non-2xx
-- answers still show up in wrk's "Non-2xx or 3xx responses" line).
local path = assert(os.getenv("BODY_FILE"), "BODY_FILE is not set")
local key = assert(os.getenv("RELAY_KEY"), "RELAY_KEY is not set")
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
