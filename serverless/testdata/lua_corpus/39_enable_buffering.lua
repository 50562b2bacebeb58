-- @phase access
kong.service.request.enable_buffering()
-- @phase body_filter
local body = kong.service.response.get_body()
kong.response.set_raw_body("id=" .. body.id)
