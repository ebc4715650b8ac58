//! `vmq_diversity.*` settings (`specs/lua.md` 1): where scripts come from and how they run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, PluginSetting, parse_duration, parse_flag};

/// The databases of VerneMQ's bundled auth scripts (`vmq_diversity.auth_<db>.enabled`).
pub const DATABASES: [&str; 6] = [
    "postgres",
    "cockroachdb",
    "mysql",
    "mysql2",
    "mongodb",
    "redis",
];

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
}

impl Default for LuaConfig {
    fn default() -> Self {
        LuaConfig {
            script_dir: None,
            scripts: Vec::new(),
            keep_state: false,
            nr_lua_states: 1,
            hook_timeout: None,
        }
    }
}

impl LuaConfig {
    /// Reads the `vmq_diversity.*` lines; the first wrong one is an error with its line.
    pub fn from_settings(settings: &[PluginSetting]) -> Result<Self, ConfigError> {
        let mut c = LuaConfig::default();
        let mut files = BTreeMap::new();
        for s in settings {
            c.set(&s.key, &s.value, &mut files)
                .map_err(|e| s.error(e))?;
        }
        c.scripts = files.into_values().collect();
        Ok(c)
    }

    fn set(
        &mut self,
        key: &str,
        value: &str,
        files: &mut BTreeMap<String, PathBuf>,
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
                Some((name, "enabled")) if name.starts_with("auth_") => {
                    let db = &name["auth_".len()..];
                    if !DATABASES.contains(&db) {
                        return Err(format!("unknown bundled auth script {name:?}"));
                    }
                    if parse_flag(value)? {
                        return Err(format!(
                            "{name}: the database modules and VerneMQ's bundled auth scripts are \
                             not available in this broker yet"
                        ));
                    }
                }
                // The bundled scripts' own settings and the database connections (used with
                // `auth_<db>.enabled`).
                Some((name, _))
                    if name.starts_with("auth_")
                        || DATABASES.contains(&name)
                        || name == "memcache" => {}
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
             auth_postgres.enabled = off\npostgres.host = db",
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
        assert!(e("auth_postgres.enabled = on").contains("not available"));
        assert!(e("colour = red").contains("unknown setting"));
    }
}
