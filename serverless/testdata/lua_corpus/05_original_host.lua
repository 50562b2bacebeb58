-- @phase access
-- Keep the host the client asked for.
local host = kong.request.get_header("Host")
local headers = kong.request.get_headers()
kong.service.request.set_header("X-Original-Host", host .. "|" .. headers.host)
