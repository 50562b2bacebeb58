-- @phase access
local cjson = require "cjson"
ngx.req.read_body()
local data = ngx.req.get_body_data()
if data then
  local t = cjson.decode(data)
  t.amount = t.amount * 2
  ngx.req.set_body_data(cjson.encode(t))
end
