-- @phase access
kong.service.request.set_header("X-Pid", ngx.worker.pid())
