-- @phase access
-- Reject requests without an API key header.
local key = kong.request.get_header("apikey")
if not key then
  return kong.response.exit(401, { message = "Missing API key" })
end
