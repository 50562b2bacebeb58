-- @phase access
local consumer = kong.client.get_consumer()
local credential = kong.client.get_credential()
if not consumer and not credential then
  kong.service.request.set_header("X-Anonymous", "true")
end
