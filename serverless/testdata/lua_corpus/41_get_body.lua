-- @phase access
local body, err, mimetype = kong.request.get_body()
if body then
  kong.service.request.set_header("X-User", body.user .. ";" .. mimetype)
end
