-- @phase access
local allowed = { ["127.0.0.1"] = true }
if not allowed[ngx.var.remote_addr] then
  return ngx.exit(ngx.HTTP_FORBIDDEN)
end
