//! The auth scripts shipped inside the broker (`specs/lua.md` 7), written for it after the
//! behaviour of VerneMQ's: `vmq_diversity.auth_<db>.enabled = on` loads `builtin:auth/<db>.lua`
//! unless `auth_<db>.script` names a file. Their shared modules are found by `require
//! "auth/<module>"` after the files of `package.path`, so a `script_dir` that holds its own
//! `auth/` modules keeps them. The sources are in `broker/lua/auth/`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::db::settings::Backend;

/// How a bundled script's path starts.
pub const PREFIX: &str = "builtin:";

/// (name for `require`, source).
pub const MODULES: [(&str, &str); 3] = [
    (
        "auth/auth_commons",
        include_str!("../../../lua/auth/auth_commons.lua"),
    ),
    (
        "auth/sql_commons",
        include_str!("../../../lua/auth/sql_commons.lua"),
    ),
    (
        "auth/mysql_commons",
        include_str!("../../../lua/auth/mysql_commons.lua"),
    ),
];

const SCRIPTS: [(&str, &str); 6] = [
    ("postgres", include_str!("../../../lua/auth/postgres.lua")),
    (
        "cockroachdb",
        include_str!("../../../lua/auth/cockroachdb.lua"),
    ),
    ("mysql", include_str!("../../../lua/auth/mysql.lua")),
    ("mysql2", include_str!("../../../lua/auth/mysql2.lua")),
    ("redis", include_str!("../../../lua/auth/redis.lua")),
    ("mongodb", ""),
];

/// The path of `db`'s bundled auth script.
pub fn auth_script(db: Backend) -> PathBuf {
    PathBuf::from(format!("{PREFIX}auth/{}.lua", db.name()))
}

/// A script's source: a bundled one from the binary, any other from its file.
pub fn read(path: &Path) -> Result<Cow<'static, [u8]>, String> {
    let text = path.to_string_lossy();
    if let Some(rest) = text.strip_prefix(PREFIX) {
        let name = rest
            .strip_prefix("auth/")
            .and_then(|r| r.strip_suffix(".lua"));
        return SCRIPTS
            .iter()
            .find(|(n, src)| Some(*n) == name && !src.is_empty())
            .map(|(_, src)| Cow::Borrowed(src.as_bytes()))
            .ok_or_else(|| format!("{text}: no such bundled script"));
    }
    std::fs::read(path)
        .map(Cow::Owned)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_scripts_are_found() {
        for db in [
            Backend::Postgres,
            Backend::Cockroachdb,
            Backend::Mysql,
            Backend::Mysql2,
            Backend::Redis,
        ] {
            assert!(read(&auth_script(db)).is_ok(), "{db:?}");
        }
        assert!(read(&auth_script(Backend::Mongodb)).is_err());
        assert!(read(Path::new("builtin:auth/nope.lua")).is_err());
    }
}
