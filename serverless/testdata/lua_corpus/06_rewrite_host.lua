-- @phase access
kong.service.request.set_header("host", "internal.svc.cluster.local")
