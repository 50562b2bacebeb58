-- @phase access
local cjson_safe = require "cjson.safe"
local t, err = cjson_safe.decode("{bad")
if not t then
  kong.service.request.set_header("X-Json-Err", "1")
end
