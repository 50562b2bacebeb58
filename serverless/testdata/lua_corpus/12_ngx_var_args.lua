-- @phase access
ngx.var.args = "page=3"
