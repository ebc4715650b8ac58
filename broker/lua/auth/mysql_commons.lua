-- The MySQL/MariaDB auth scripts' shared part (written for this broker, after the behaviour
-- of VerneMQ's mysql.lua and mysql2.lua). Same table as PostgreSQL's, with TEXT ACL columns;
-- the password is compared hashed by the database with the SQL of `hash_method()`
-- (PASSWORD(?), MD5(?), SHA1(?) or SHA2(?, 256)).

local commons = require "auth/auth_commons"

local M = {}

function M.register(module, pool)
  return function(reg)
    if reg.username == nil or reg.password == nil then
      return false
    end
    local rows = module.execute(pool,
      "SELECT publish_acl, subscribe_acl, client_id FROM vmq_auth_acl " ..
      "WHERE mountpoint=? AND (client_id=? OR client_id='*') AND username=? AND password=" ..
      module.hash_method(),
      reg.mountpoint, reg.client_id, reg.username, reg.password)
    local row = commons.pick(rows)
    if row == nil then
      return false
    end
    return commons.store(reg, row.publish_acl, row.subscribe_acl)
  end
end

return M
