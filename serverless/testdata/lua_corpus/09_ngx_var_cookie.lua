-- @phase access
local session = ngx.var.cookie_session
if session then
  kong.service.request.set_header("X-Session", session)
end
