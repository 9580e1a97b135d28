-- wrk: GET /v2/ping with the headers loadgen sends (Host is added by wrk). Static fields only,
-- so wrk renders the request once and the client costs as little as it can.
wrk.method = "GET"
wrk.path = "/v2/ping"
wrk.headers["Client-ID"] = "3381af92-2b9e-11e3-b191-71861300734c"
wrk.headers["X-Project-ID"] = "wrk-0"
wrk.headers["User-Agent"] = "wrk"
wrk.headers["Accept"] = "application/json"
