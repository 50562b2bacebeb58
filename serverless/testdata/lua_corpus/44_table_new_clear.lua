-- @phase access
local t = kong.table.new(2, 0)
t[1] = "a"
t[2] = "b"
local s = table.concat(t, ",")
kong.table.clear(t)
kong.service.request.set_header("X-T", s .. #t)
