-- @phase access
if ngx.config.subsystem == "http" then
  kong.service.request.set_header("X-Subsystem", ngx.config.subsystem)
end
