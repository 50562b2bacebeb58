-- @phase access
local path, n = ngx.re.gsub(kong.request.get_path(), "^/orders", "/api/v1/orders", "jo")
if n > 0 then
  kong.service.request.set_path(path)
end
