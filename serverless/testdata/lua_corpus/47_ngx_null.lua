-- @phase access
local cjson = require "cjson"
local t = cjson.decode('{"a": null}')
if t.a == ngx.null then
  kong.service.request.set_header("X-Null", "1")
end
