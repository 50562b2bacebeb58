-- @phase body_filter
local cjson = require("cjson.safe")
local body = kong.response.get_raw_body()
local data = cjson.decode(body)
if data then
  data.secret = nil
  kong.response.set_raw_body(cjson.encode(data))
end
