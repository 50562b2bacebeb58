-- @phase access
kong.log.set_serialize_value("request.headers.authorization", "REDACTED")
kong.service.request.set_header("X-Serialized", "1")
