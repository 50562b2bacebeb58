-- @phase access
kong.service.request.set_header("Authorization", "Basic " .. ngx.encode_base64("user:pass"))
