//! `vmq_diversity.*` settings (`specs/lua.md` 1): where scripts come from and how they run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::db::settings::{Backend, DbSettings};
use crate::config::{ConfigError, PluginSetting, parse_duration, parse_flag};

/// The databases of VerneMQ's bundled auth scripts (`vmq_diversity.auth_<db>.enabled`), in
/// the order they load: every config section but memcached's.
fn has_auth_script(db: Backend) -> bool {
    db != Backend::Memcache
}

/// A bundled auth script turned on: which database, and a script to use instead of ours
/// (`auth_<db>.script`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthScript {
    /// Its database.
    pub db: Backend,
    /// `vmq_diversity.auth_<db>.script`, if set.
    pub path: Option<PathBuf>,
}

/// The plugin's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LuaConfig {
    /// Every `*.lua` directly in it is loaded at start; `require` looks there too.
    pub script_dir: Option<PathBuf>,
    /// `vmq_diversity.<name>.file`, in name order (loaded after `script_dir`'s).
    pub scripts: Vec<PathBuf>,
    /// Keep globals between hook calls (a script's `keep_state` overrides it).
    pub keep_state: bool,
    /// Lua states per script (a script's `num_states` overrides it).
    pub nr_lua_states: usize,
    /// Longest a hook call may run before it is stopped (ours; none by default, as VerneMQ).
    pub hook_timeout: Option<Duration>,
    /// The bundled auth scripts turned on, in load order (after every other script).
    pub auth_scripts: Vec<AuthScript>,
    /// `vmq_diversity.<db>.*`: what `<db>.ensure_pool` falls back to.
    pub databases: DbSettings,
}

impl Default for LuaConfig {
    fn default() -> Self {
        LuaConfig {
            script_dir: None,
            scripts: Vec::new(),
            keep_state: false,
            nr_lua_states: 1,
            hook_timeout: None,
            auth_scripts: Vec::new(),
            databases: DbSettings::default(),
        }
    }
}

impl LuaConfig {
    /// Reads the `vmq_diversity.*` lines; the first wrong one is an error with its line.
    pub fn from_settings(settings: &[PluginSetting]) -> Result<Self, ConfigError> {
        let mut c = LuaConfig::default();
        let mut files = BTreeMap::new();
        let mut auth = BTreeMap::new();
        for s in settings {
            c.set(&s.key, &s.value, &mut files, &mut auth)
                .map_err(|e| s.error(e))?;
        }
        c.scripts = files.into_values().collect();
        c.auth_scripts = Backend::ALL
            .into_iter()
            .filter(|db| has_auth_script(*db))
            .filter_map(|db| match auth.remove(&db) {
                Some((true, path)) => Some(AuthScript { db, path }),
                _ => None,
            })
            .collect();
        Ok(c)
    }

    fn set(
        &mut self,
        key: &str,
        value: &str,
        files: &mut BTreeMap<String, PathBuf>,
        auth: &mut BTreeMap<Backend, (bool, Option<PathBuf>)>,
    ) -> Result<(), String> {
        match key {
            "script_dir" => self.script_dir = Some(PathBuf::from(value)),
            "keep_state" => self.keep_state = parse_flag(value)?,
            "nr_lua_states" => {
                self.nr_lua_states = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| format!("expected 1 to 256 states, got {value:?}"))?
            }
            "hook_timeout" => {
                self.hook_timeout = match value {
                    "off" => None,
                    v => parse_duration(v)?,
                }
            }
            _ => match key.split_once('.') {
                Some((name, "file")) => {
                    files.insert(name.to_owned(), PathBuf::from(value));
                }
                Some((name, what @ ("enabled" | "script"))) if name.starts_with("auth_") => {
                    let db = Backend::parse(&name["auth_".len()..])
                        .filter(|db| has_auth_script(*db))
                        .ok_or_else(|| format!("unknown bundled auth script {name:?}"))?;
                    let entry = auth.entry(db).or_default();
                    if what == "script" {
                        entry.1 = Some(PathBuf::from(value));
                    } else {
                        entry.0 = parse_flag(value)?;
                        if entry.0 && db == Backend::Mongodb {
                            return Err("auth_mongodb: MongoDB is not supported by this broker \
                                 (no mongodb module)"
                                .into());
                        }
                    }
                }
                Some((name, rest)) if Backend::parse(name).is_some() => {
                    let db = Backend::parse(name).expect("checked");
                    self.databases.set(db, rest, value)?;
                }
                _ => {
                    return Err(format!(
                        "unknown setting {key:?} (script_dir, <name>.file, keep_state, \
                         nr_lua_states, hook_timeout, auth_<db>.enabled, <db>.*)"
                    ));
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Vec<PluginSetting> {
        PluginSetting::lines(text)
    }

    #[test]
    fn scripts_in_name_order_and_bad_lines() {
        let c = LuaConfig::from_settings(&settings(
            "b.file = /b.lua\na.file = /a.lua\nnr_lua_states = 4\nhook_timeout = 2s\n\
             auth_postgres.enabled = on\npostgres.host = db\nauth_redis.enabled = on\n\
             auth_redis.script = /my/redis.lua",
        ))
        .unwrap();
        assert_eq!(
            c.scripts,
            [PathBuf::from("/a.lua"), PathBuf::from("/b.lua")]
        );
        assert_eq!(c.nr_lua_states, 4);
        assert_eq!(c.hook_timeout, Some(Duration::from_secs(2)));
        let e = |t: &str| {
            LuaConfig::from_settings(&settings(t))
                .unwrap_err()
                .to_string()
        };
        assert!(e("nr_lua_states = 0").contains("1 to 256"));
        assert_eq!(
            c.auth_scripts,
            [
                AuthScript {
                    db: Backend::Postgres,
                    path: None
                },
                AuthScript {
                    db: Backend::Redis,
                    path: Some(PathBuf::from("/my/redis.lua"))
                }
            ]
        );
        assert_eq!(c.databases.get(Backend::Postgres, "host"), "db");
        assert!(e("auth_mongodb.enabled = on").contains("not supported"));
        assert!(e("auth_memcache.enabled = on").contains("unknown bundled"));
        assert!(e("postgres.colour = red").contains("unknown setting postgres.colour"));
        assert!(e("redis.port = x").contains("redis.port"));
        assert!(e("colour = red").contains("unknown setting"));
    }
}
