-- @phase access
ngx.ctx.started = "yes"
-- @phase header_filter
ngx.header["X-Ctx"] = ngx.ctx.started
