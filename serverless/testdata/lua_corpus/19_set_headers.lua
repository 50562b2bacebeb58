-- @phase header_filter
kong.response.set_headers({
  ["X-A"] = "1",
  ["X-B"] = { "2", "3" },
})
