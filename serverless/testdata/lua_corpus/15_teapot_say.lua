-- @phase access
ngx.status = 418
ngx.say("I'm a teapot")
return ngx.exit(418)
