-- @phase access
local sig = ngx.encode_base64(ngx.hmac_sha1("secret", ngx.var.request_uri))
kong.service.request.set_header("X-Signature", sig)
