-- @phase access
local cjson = require "cjson"
ngx.header["Content-Type"] = "application/json"
ngx.say(cjson.encode({ ok = true }))
return ngx.exit(ngx.HTTP_OK)
