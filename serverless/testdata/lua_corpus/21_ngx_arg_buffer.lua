-- @phase body_filter
-- Buffer the chunks, change the whole body at the end.
local chunk, eof = ngx.arg[1], ngx.arg[2]
ngx.ctx.buffered = (ngx.ctx.buffered or "") .. (chunk or "")
if eof then
  ngx.arg[1] = string.upper(ngx.ctx.buffered)
else
  ngx.arg[1] = nil
end
