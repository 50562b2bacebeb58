-- @phase access
return kong.response.error(429, "Slow down", { ["Retry-After"] = "10" })
