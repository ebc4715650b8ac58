-- vmq_diversity.auth_redis.enabled = on: clients authenticated and authorized from Redis
-- (written for this broker, after the behaviour of VerneMQ's redis.lua). A client's key is the
-- JSON array [mountpoint, client_id, username] (then [mountpoint, "*", username]); its value a
-- JSON object {"passhash": <bcrypt hash>, "publish_acl": [...], "subscribe_acl": [...]}.
local commons = require "auth/auth_commons"

num_states = 10
keep_state = false

redis.ensure_pool({ pool_id = "auth_redis" })

local function lookup(reg, client_id)
  local value = redis.cmd("auth_redis", "GET", json.encode({ reg.mountpoint, client_id, reg.username }))
  if type(value) ~= "string" then
    return nil
  end
  local entry = json.decode(value)
  if type(entry) ~= "table" or not commons.bcrypt_ok(reg.password, entry.passhash) then
    return nil
  end
  return entry
end

local function auth_on_register(reg)
  if reg.username == nil or reg.password == nil then
    return false
  end
  local entry = lookup(reg, reg.client_id) or lookup(reg, "*")
  if entry == nil then
    return false
  end
  return commons.store(reg, entry.publish_acl, entry.subscribe_acl)
end

hooks = commons.hooks(auth_on_register)
