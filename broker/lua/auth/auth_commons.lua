-- What every bundled auth script shares (written for this broker, after the behaviour of
-- VerneMQ's auth_commons.lua): the hooks they register, the choice between a client's own row
-- and its user's '*' row, and the check of the ACLs before they go into auth_cache.
--
-- Once auth_on_register has put a client's ACLs into auth_cache, the cache alone decides its
-- publishes and subscribes (no query per message); the script's own auth_on_publish and
-- auth_on_subscribe only run for clients without an entry, and refuse.

local M = {}

local function check_value(v, where)
  local t = type(v)
  assert(t == "string" or t == "number" or t == "boolean", where .. ": a " .. t)
end

local function check_acls(acls, what)
  if acls == nil then
    return nil
  end
  assert(type(acls) == "table", what .. " is not a list")
  for _, acl in ipairs(acls) do
    assert(type(acl) == "table", what .. ": an ACL is not an object")
    for k, v in pairs(acl) do
      assert(type(k) == "string", what .. ": an ACL key is not a string")
      if k == "pattern" then
        assert(type(v) == "string", what .. ": pattern is not a string")
      elseif k == "modifiers" then
        assert(type(v) == "table", what .. ": modifiers is not a table")
      else
        check_value(v, what .. "." .. k)
      end
    end
  end
  return acls
end

-- Decodes an ACL column: JSON text, or nil for SQL NULL (which some drivers give as "null").
function M.decode(text)
  if text == nil or text == false or text == "" or text == "null" then
    return nil
  end
  if type(text) == "table" then
    return text
  end
  return json.decode(text)
end

-- The row to use: the one for this client id, else the user's '*' row.
function M.pick(rows)
  if type(rows) ~= "table" then
    return nil
  end
  local default = nil
  for _, row in ipairs(rows) do
    if row.client_id ~= nil and row.client_id ~= "*" then
      return row
    end
    default = default or row
  end
  return default
end

-- Puts the client's ACLs into auth_cache; an ACL that is not what it should be is an error
-- (the client is refused).
function M.store(reg, publish_acl, subscribe_acl)
  assert(type(reg.mountpoint) == "string", "mountpoint is not a string")
  assert(type(reg.client_id) == "string", "client_id is not a string")
  assert(type(reg.username) == "string", "username is not a string")
  auth_cache.insert(
    reg.mountpoint,
    reg.client_id,
    reg.username,
    check_acls(M.decode(publish_acl), "publish_acl"),
    check_acls(M.decode(subscribe_acl), "subscribe_acl")
  )
  return true
end

-- A client with an auth_cache entry never reaches these: the cache decides.
local function refuse()
  return false
end

local function nothing() end

-- The hooks table of a bundled script whose auth_on_register is `register`.
function M.hooks(register)
  return {
    auth_on_register = register,
    auth_on_publish = refuse,
    auth_on_subscribe = refuse,
    on_unsubscribe = nothing,
    on_client_gone = nothing,
    on_client_offline = nothing,
    on_session_expired = nothing,
    auth_on_register_m5 = register,
    auth_on_publish_m5 = refuse,
    auth_on_subscribe_m5 = refuse,
  }
end

-- True when `password` verifies against the bcrypt hash `hash`.
function M.bcrypt_ok(password, hash)
  if type(hash) ~= "string" or hash == "" or hash == "null" then
    return false
  end
  local ok, computed = pcall(bcrypt.hashpw, password, hash)
  return ok and computed == hash
end

return M
