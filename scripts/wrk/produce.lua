-- wrk: POST one 256-byte message per request to one queue, with the headers loadgen sends.
-- The body is the size and shape of loadgen's (a tagged JSON object padded to 256 bytes), and
-- static, so wrk renders the request once. Env: WRK_QUEUE (default wrk-produce).
local queue = os.getenv("WRK_QUEUE") or "wrk-produce"
local tag = '{"r":"wrk","p":0,"s":0,"q":0,"t":0,"x":"'
local pad = string.rep("x", 256 - #tag - 2)
wrk.method = "POST"
wrk.path = "/v2/queues/" .. queue .. "/messages"
wrk.headers["Client-ID"] = "3381af92-2b9e-11e3-b191-71861300734c"
wrk.headers["X-Project-ID"] = "wrk-0"
wrk.headers["User-Agent"] = "wrk"
wrk.headers["Accept"] = "application/json"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"messages":[{"ttl":3600,"body":' .. tag .. pad .. '"}}]}'
