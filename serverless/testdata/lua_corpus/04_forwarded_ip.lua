-- @phase access
kong.service.request.set_header("X-Real-IP", kong.client.get_forwarded_ip())
