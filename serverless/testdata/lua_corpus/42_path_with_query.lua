-- @phase access
kong.service.request.set_header("X-Full", kong.request.get_path_with_query())
kong.service.request.set_header("X-Fwd", kong.request.get_forwarded_scheme() .. "://" .. kong.request.get_forwarded_host() .. ":" .. kong.request.get_forwarded_port())
