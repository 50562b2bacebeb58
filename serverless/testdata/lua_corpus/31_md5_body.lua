-- @phase access
local body = kong.request.get_raw_body()
kong.service.request.set_header("X-Body-MD5", ngx.md5(body))
