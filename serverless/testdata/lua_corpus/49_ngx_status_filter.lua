-- @phase header_filter
if ngx.status == 200 then
  ngx.status = 202
end
