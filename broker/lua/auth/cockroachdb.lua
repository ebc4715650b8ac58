-- vmq_diversity.auth_cockroachdb.enabled = on: as postgres.lua, against CockroachDB with the
-- settings of vmq_diversity.cockroachdb.* (password_hash_method sha256 or bcrypt, the default).
local commons = require "auth/auth_commons"
local sql = require "auth/sql_commons"

num_states = 10
keep_state = false

cockroachdb.ensure_pool({ pool_id = "auth_cockroachdb" })

hooks = commons.hooks(sql.register(cockroachdb, "auth_cockroachdb"))
