//! `vmq_diversity.<db>.*` (`specs/lua.md` 1): the connection settings a script's
//! `<db>.ensure_pool` falls back to, with VerneMQ's defaults, checked when the config is read.

use std::collections::BTreeMap;

/// A database section of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    Postgres,
    Cockroachdb,
    Mysql,
    Mysql2,
    Redis,
    Memcache,
    Mongodb,
}

const SQL_SSL: &[&str] = &[
    "ssl",
    "cafile",
    "certfile",
    "keyfile",
    "ssl.depth",
    "ssl.verify",
    "ssl.use_system_cas",
    "ssl.customize_hostname_check",
];

impl Backend {
    /// Every section, in the order VerneMQ loads the bundled auth scripts.
    pub const ALL: [Backend; 7] = [
        Backend::Postgres,
        Backend::Cockroachdb,
        Backend::Mysql,
        Backend::Mysql2,
        Backend::Mongodb,
        Backend::Redis,
        Backend::Memcache,
    ];

    /// The config section's name (`vmq_diversity.<name>.*`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Cockroachdb => "cockroachdb",
            Backend::Mysql => "mysql",
            Backend::Mysql2 => "mysql2",
            Backend::Redis => "redis",
            Backend::Memcache => "memcache",
            Backend::Mongodb => "mongodb",
        }
    }

    /// The section called `name`.
    pub fn parse(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name)
    }

    /// VerneMQ's default for `key`, `None` for a key the section does not have.
    pub fn default(self, key: &str) -> Option<&'static str> {
        use Backend::*;
        let d = match (self, key) {
            (_, "host") => "localhost",
            (Postgres, "port") => "5432",
            (Cockroachdb, "port") => "26257",
            (Mysql | Mysql2, "port") => "3306",
            (Redis, "port") => "6379",
            (Memcache, "port") => "11211",
            (Mongodb, "port") => "27017",
            (Postgres | Cockroachdb | Mysql | Mysql2, "user") => "root",
            (Postgres | Mysql | Mysql2, "password") => "password",
            (Cockroachdb | Redis, "password") => "",
            (Redis, "user") => "",
            (Postgres | Cockroachdb | Mysql | Mysql2, "database") => "vernemq_db",
            (Redis, "database") => "0",
            (Postgres | Cockroachdb | Mysql | Mysql2 | Redis | Mongodb, "pool_size") => "5",
            (Postgres, "password_hash_method") => "crypt",
            (Cockroachdb, "password_hash_method") => "bcrypt",
            (Mysql, "password_hash_method") => "password",
            (Mysql2, "password_hash_method") => "sha256",
            (Cockroachdb, "ssl") => "on",
            (Postgres | Mysql2, "ssl") => "off",
            (Postgres | Cockroachdb | Mysql2, "ssl.verify") => "verify_peer",
            (Postgres | Cockroachdb | Mysql2, "ssl.use_system_cas") => "on",
            (Postgres | Cockroachdb | Mysql2, k) if SQL_SSL.contains(&k) => "",
            // MongoDB cannot be used here; its keys are kept so that a VerneMQ config loads.
            (Mongodb, _) => "",
            _ => return None,
        };
        Some(d)
    }

    /// The password hash methods the bundled script of this database knows.
    pub fn hash_methods(self) -> &'static [&'static str] {
        match self {
            Backend::Postgres => &["crypt", "bcrypt"],
            Backend::Cockroachdb => &["sha256", "bcrypt"],
            Backend::Mysql | Backend::Mysql2 => &["password", "md5", "sha1", "sha256"],
            _ => &[],
        }
    }

    /// Checks `vmq_diversity.<self>.<key> = value`.
    pub fn check(self, key: &str, value: &str) -> Result<(), String> {
        let name = self.name();
        if self.default(key).is_none() {
            return Err(format!("unknown setting {name}.{key}"));
        }
        if self == Backend::Mongodb {
            return Ok(());
        }
        let number = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .map(drop)
                .ok_or_else(|| {
                    format!("{name}.{key}: expected a number up to {max}, got {value:?}")
                })
        };
        match key {
            "port" => number(65535),
            "pool_size" => number(1000).and_then(|()| {
                if value == "0" {
                    Err(format!("{name}.pool_size: at least 1"))
                } else {
                    Ok(())
                }
            }),
            "database" if self == Backend::Redis => number(1 << 20),
            "ssl.depth" => number(100),
            "password_hash_method" if !self.hash_methods().contains(&value) => Err(format!(
                "{name}.password_hash_method: expected one of {}, got {value:?}",
                self.hash_methods().join(", ")
            )),
            "ssl.verify" if !matches!(value, "verify_peer" | "verify_none") => Err(format!(
                "{name}.ssl.verify: expected verify_peer or verify_none, got {value:?}"
            )),
            "ssl.verify" => Ok(()),
            "ssl" | "ssl.use_system_cas" | "ssl.customize_hostname_check" => {
                crate::config::parse_flag(value)
                    .map(drop)
                    .map_err(|e| format!("{name}.{key}: {e}"))
            }
            _ => Ok(()),
        }
    }
}

/// The configured `vmq_diversity.<db>.*` values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbSettings {
    values: BTreeMap<(Backend, String), String>,
}

impl DbSettings {
    /// Checks and keeps `<db>.<key> = value`.
    pub fn set(&mut self, db: Backend, key: &str, value: &str) -> Result<(), String> {
        db.check(key, value)?;
        self.values.insert((db, key.to_owned()), value.to_owned());
        Ok(())
    }

    /// The configured value, else VerneMQ's default (empty for a key the section lacks).
    pub fn get(&self, db: Backend, key: &str) -> String {
        self.values
            .get(&(db, key.to_owned()))
            .cloned()
            .unwrap_or_else(|| db.default(key).unwrap_or_default().to_owned())
    }

    /// A flag's value.
    pub fn flag(&self, db: Backend, key: &str) -> bool {
        crate::config::parse_flag(&self.get(db, key)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let mut s = DbSettings::default();
        assert_eq!(s.get(Backend::Postgres, "port"), "5432");
        assert_eq!(s.get(Backend::Mysql2, "password_hash_method"), "sha256");
        s.set(Backend::Postgres, "port", "15432").unwrap();
        assert_eq!(s.get(Backend::Postgres, "port"), "15432");
        assert!(s.set(Backend::Postgres, "port", "x").is_err());
        assert!(
            s.set(Backend::Redis, "colour", "red")
                .unwrap_err()
                .contains("unknown")
        );
        assert!(
            s.set(Backend::Postgres, "password_hash_method", "md5")
                .unwrap_err()
                .contains("crypt, bcrypt")
        );
        s.set(Backend::Mysql, "password_hash_method", "md5")
            .unwrap();
        assert!(s.set(Backend::Redis, "pool_size", "0").is_err());
        assert!(s.flag(Backend::Cockroachdb, "ssl"));
        s.set(Backend::Mysql2, "ssl.verify", "verify_none").unwrap();
        assert!(s.set(Backend::Mysql2, "ssl.verify", "on").is_err());
    }
}
