-- @phase access
local headers = ngx.req.get_headers()
local ua = headers["user-agent"] or ""
if ua:find("curl", 1, true) then
  ngx.req.set_header("X-Is-Curl", "yes")
end
ngx.req.clear_header("cookie")
