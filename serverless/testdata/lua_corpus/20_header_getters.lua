-- @phase header_filter
if kong.response.get_status() == 200 and kong.response.get_header("x-upstream") then
  kong.response.set_header("X-Seen", kong.response.get_header("content-type"))
end
kong.response.set_header("X-Source", kong.response.get_source())
