-- @phase access
-- Send plain-http clients to https.
if kong.request.get_forwarded_scheme() == "http" or kong.request.get_header("x-force-redirect") then
  return ngx.redirect("https://" .. kong.request.get_host() .. kong.request.get_path_with_query(), ngx.HTTP_MOVED_PERMANENTLY)
end
