-- @phase access
-- Copy a query argument into an upstream header.
local page = kong.request.get_query_arg("page")
if page then
  kong.service.request.set_header("X-Page", page)
end
