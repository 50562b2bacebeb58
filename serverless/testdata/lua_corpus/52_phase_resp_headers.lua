-- @phase header_filter
if ngx.get_phase() == "header_filter" then
  local h = ngx.resp.get_headers()
  ngx.header["X-Upstream-Copy"] = h["x-upstream"]
end
