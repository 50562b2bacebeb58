-- @phase access
local args = ngx.req.get_uri_args()
args.extra = "a b&c"
args.page = nil
ngx.req.set_uri_args(args)
