-- @phase access
local route = kong.router.get_route()
local service = kong.router.get_service()
if route and service then
  kong.service.request.set_header("X-Route", route.name)
  kong.service.request.set_header("X-Service", service.name .. "@" .. service.host .. ":" .. service.port)
end
