-- @phase access
local m, err = ngx.re.match(ngx.var.uri, [[^/orders/(?<id>\d+)$]], "jo")
if m then
  kong.service.request.set_header("X-Order-Id", m.id .. "," .. m[1])
elseif err then
  kong.log.err(err)
end
