-- vmq_diversity.auth_mysql.enabled = on: clients authenticated and authorized from a
-- MySQL/MariaDB vmq_auth_acl table (see mysql_commons.lua), with the connection settings and
-- password_hash_method of vmq_diversity.mysql.*.
local commons = require "auth/auth_commons"
local sql = require "auth/mysql_commons"

num_states = 10
keep_state = false

mysql.ensure_pool({ pool_id = "auth_mysql" })

hooks = commons.hooks(sql.register(mysql, "auth_mysql"))
