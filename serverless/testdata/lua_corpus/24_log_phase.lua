-- @phase log
kong.log.notice("done status=", kong.response.get_status(), " ip=", kong.client.get_ip(), " uri=", ngx.var.request_uri)
