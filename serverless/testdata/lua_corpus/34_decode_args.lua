-- @phase access
local t = ngx.decode_args("x=1&y=two")
kong.service.request.set_header("X-Y", t.y .. ngx.encode_args({ z = "a b" }))
