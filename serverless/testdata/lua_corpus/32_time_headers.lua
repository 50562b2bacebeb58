-- @phase access
local now = ngx.time()
kong.service.request.set_header("X-Time", now)
kong.service.request.set_header("X-Http-Date", ngx.http_time(now))
kong.service.request.set_header("X-Today", ngx.today())
kong.service.request.set_header("X-Year", os.date("!%Y", os.time()))
kong.service.request.set_header("X-Now-Ms", math.floor(ngx.now() * 1000))
