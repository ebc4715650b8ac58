-- vmq_diversity.auth_postgres.enabled = on: clients authenticated and authorized from
-- PostgreSQL's vmq_auth_acl table (see sql_commons.lua), with the connection settings of
-- vmq_diversity.postgres.* and its password_hash_method (crypt, the default, checks the
-- password in the database with pgcrypto; bcrypt checks it here).
local commons = require "auth/auth_commons"
local sql = require "auth/sql_commons"

num_states = 10
keep_state = false

postgres.ensure_pool({ pool_id = "auth_postgres" })

hooks = commons.hooks(sql.register(postgres, "auth_postgres"))
