-- @phase access
kong.service.request.set_header("X-Node", kong.node.get_id())
kong.service.request.set_header("X-Hostname", kong.node.get_hostname())
