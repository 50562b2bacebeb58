-- @phase rewrite
kong.service.request.set_header("X-Rewrite", kong.request.get_method())
