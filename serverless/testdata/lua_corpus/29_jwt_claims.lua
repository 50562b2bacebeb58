-- @phase access
local cjson = require "cjson"
local token = kong.request.get_header("x-jwt")
local payload = token and token:match("^[^.]+%.([^.]+)%.")
if not payload then
  return kong.response.exit(401, { message = "Unauthorized" })
end
payload = payload:gsub("-", "+"):gsub("_", "/")
local claims = cjson.decode(ngx.decode_base64(payload))
kong.service.request.set_header("X-Sub", claims.sub)
