-- @phase access
ngx.req.set_header("X-Key-Copy", ngx.var.http_x_api_key .. "/" .. ngx.var.arg_page)
