-- @phase access
kong.ctx.plugin.tag = "from-access"
-- @phase header_filter
kong.response.set_header("X-Plugin-Ctx", kong.ctx.plugin.tag)
