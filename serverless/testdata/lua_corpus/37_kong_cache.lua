-- @phase access
local function load_config(name)
  return { name = name, loaded = true }
end
local conf, err = kong.cache:get("corpus:conf", { ttl = 30 }, load_config, "tenant-a")
if err then
  return kong.response.exit(500, { message = err })
end
kong.service.request.set_header("X-Conf", conf.name)
