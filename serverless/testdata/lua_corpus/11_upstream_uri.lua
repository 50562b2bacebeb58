-- @phase access
-- Version the upstream path.
ngx.var.upstream_uri = "/v2" .. ngx.var.uri
