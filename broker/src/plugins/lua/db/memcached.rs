//! `memcached` (`specs/lua.md` 4): `ensure_pool`, `get`, `set`, `add`, `replace`, `delete`,
//! `flush_all`. The memcache client is blocking; it runs on the Lua thread that asked.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table};

use super::settings::Backend;
use super::{CONNECT_TIMEOUT, Databases, Options, Pool, bad, ensure_pool};

const DB: Backend = Backend::Memcache;

fn client(dbs: &Databases, id: &str) -> mlua::Result<Arc<memcache::Client>> {
    match dbs.pool(DB, id)? {
        Pool::Memcached(c) => Ok(c),
        _ => Err(bad(format!("memcached: {id:?} is not a memcached pool"))),
    }
}

/// The `memcached` module table.
pub fn module(lua: &Lua, dbs: &Arc<Databases>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("ensure_pool", ensure_pool(lua, dbs, DB, make_pool)?)?;
    let d = dbs.clone();
    t.set(
        "get",
        lua.create_function(move |lua, (id, key): (String, String)| {
            match client(&d, &id)?.get::<Vec<u8>>(&key) {
                Ok(Some(v)) => Ok(mlua::Value::String(lua.create_string(&v)?)),
                Ok(None) => Ok(mlua::Value::Boolean(false)),
                Err(e) => Err(bad(format!("memcached.get ({id}): {e}"))),
            }
        })?,
    )?;
    for op in ["set", "add", "replace"] {
        let d = dbs.clone();
        t.set(
            op,
            lua.create_function(
                move |_, (id, key, value, exp): (String, String, mlua::LuaString, Option<u32>)| {
                    let c = client(&d, &id)?;
                    let bytes = value.as_bytes();
                    let exp = exp.unwrap_or(0);
                    let r = match op {
                        "set" => c.set(&key, &bytes[..], exp),
                        "add" => c.add(&key, &bytes[..], exp),
                        _ => c.replace(&key, &bytes[..], exp),
                    };
                    match r {
                        Ok(()) => Ok(mlua::Value::String(value)),
                        // Not stored (add of a present key, replace of an absent one).
                        Err(memcache::MemcacheError::CommandError(_))
                        | Err(memcache::MemcacheError::ServerError(_)) => {
                            Ok(mlua::Value::Boolean(false))
                        }
                        Err(e) => Err(bad(format!("memcached.{op} ({id}): {e}"))),
                    }
                },
            )?,
        )?;
    }
    let d = dbs.clone();
    t.set(
        "delete",
        lua.create_function(move |_, (id, key): (String, String)| {
            client(&d, &id)?
                .delete(&key)
                .map_err(|e| bad(format!("memcached.delete ({id}): {e}")))
        })?,
    )?;
    let d = dbs.clone();
    t.set(
        "flush_all",
        lua.create_function(move |_, id: String| {
            client(&d, &id)?
                .flush()
                .map_err(|e| bad(format!("memcached.flush_all ({id}): {e}")))?;
            Ok(true)
        })?,
    )?;
    Ok(t)
}

/// A new pool for `ensure_pool`'s options.
fn make_pool(o: &Options) -> mlua::Result<super::Pool> {
    let url = format!(
        "memcache://{}:{}",
        o.string("host", "host")?,
        o.number("port", "port")?.clamp(1, 65535)
    );
    let c = memcache::Client::builder()
        .add_server(url.as_str())
        .map_err(|e| bad(format!("memcached.ensure_pool: {e}")))?
        .with_min_idle_conns(0)
        .with_max_pool_size(5)
        .with_connection_timeout(CONNECT_TIMEOUT)
        .with_read_timeout(Duration::from_secs(5))
        .with_write_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| bad(format!("memcached.ensure_pool ({url}): {e}")))?;
    Ok(Pool::Memcached(Arc::new(c)))
}
