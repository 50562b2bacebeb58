-- @phase access
kong.service.request.set_header("X-Proto", kong.client.get_protocol() .. ":" .. kong.client.get_port())
