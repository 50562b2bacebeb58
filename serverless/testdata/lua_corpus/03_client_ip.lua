-- @phase access
local ip = kong.client.get_ip()
kong.service.request.set_header("X-Client-IP", ip)
