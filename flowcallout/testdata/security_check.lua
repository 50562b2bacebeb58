local security_result = kong.ctx.shared.security_check_result

if security_result and security_result.status == 200 then
    kong.log.notice("Shared security flow passed. Response: ", security_result.body)
    -- Continue with main logic
else
    kong.log.warn("Shared security flow failed or returned non-200. Status: ", security_result.status)
    -- Take action based on failure
end
