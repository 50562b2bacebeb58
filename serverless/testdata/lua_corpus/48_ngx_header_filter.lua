-- @phase header_filter
ngx.header.content_length = nil
ngx.header["X-Powered-By"] = "sidecall"
