-- @phase access
kong.log.set_serialize_value("tenant", kong.request.get_header("x-api-key"))
-- @phase log
local cjson = require "cjson"
local entry = kong.log.serialize()
kong.log.info("entry ", cjson.encode({
  status = entry.response.status,
  tenant = entry.tenant,
  route = entry.route and entry.route.name,
  auth = entry.request.headers.authorization,
}))
