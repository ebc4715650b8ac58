-- The PostgreSQL and CockroachDB auth scripts' shared part (written for this broker, after
-- the behaviour of VerneMQ's postgres_cockroach_commons.lua). Table:
--   vmq_auth_acl(mountpoint, client_id, username, password, publish_acl, subscribe_acl)
-- a row per (mountpoint, client_id, username); client_id '*' is the user's default row.

local commons = require "auth/auth_commons"

local M = {}

local COLUMNS = "publish_acl::TEXT AS publish_acl, subscribe_acl::TEXT AS subscribe_acl, client_id"
local WHERE = "mountpoint=$1 AND (client_id=$2 OR client_id='*') AND username=$3"

-- An auth_on_register for `module` (postgres or cockroachdb) on pool `pool`.
function M.register(module, pool)
  return function(reg)
    if reg.username == nil or reg.password == nil then
      return false
    end
    local method = module.hash_method()
    local rows
    if method == "crypt" then
      rows = module.execute(pool,
        "SELECT " .. COLUMNS .. " FROM vmq_auth_acl WHERE " .. WHERE ..
        " AND password=crypt($4, password)",
        reg.mountpoint, reg.client_id, reg.username, reg.password)
    elseif method == "sha256" then
      rows = module.execute(pool,
        "SELECT " .. COLUMNS .. " FROM vmq_auth_acl WHERE " .. WHERE ..
        " AND password=sha256($4::TEXT)",
        reg.mountpoint, reg.client_id, reg.username, reg.password)
    elseif method == "bcrypt" then
      local all = module.execute(pool,
        "SELECT " .. COLUMNS .. ", password AS passhash FROM vmq_auth_acl WHERE " .. WHERE,
        reg.mountpoint, reg.client_id, reg.username)
      rows = {}
      if type(all) == "table" then
        for _, row in ipairs(all) do
          if commons.bcrypt_ok(reg.password, row.passhash) then
            rows[#rows + 1] = row
          end
        end
      end
    else
      return false
    end
    local row = commons.pick(rows)
    if row == nil then
      return false
    end
    return commons.store(reg, row.publish_acl, row.subscribe_acl)
  end
end

return M
