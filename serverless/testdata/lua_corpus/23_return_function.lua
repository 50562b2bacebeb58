-- @phase access
-- Upvalues live as long as the worker.
local count = 0
return function()
  count = count + 1
  kong.service.request.set_header("X-Count", count)
end
