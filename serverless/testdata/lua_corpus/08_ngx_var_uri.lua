-- @phase access
ngx.req.set_header("X-Uri", ngx.var.uri .. "|" .. ngx.var.request_uri .. "|" .. ngx.var.args)
