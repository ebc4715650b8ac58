//! `redis` (`specs/lua.md` 4): `ensure_pool`, `cmd(pool, "COMMAND words", args...)` with
//! VerneMQ's answers: `OK` is `true`, a nil reply `nil`, integers as strings, bulk strings as
//! strings, arrays as arrays, an error reply `false`.

use std::sync::Arc;

use mlua::{Lua, Table, Value, Variadic};
use redis::{ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, Value as R};

use super::settings::Backend;
use super::{Databases, Options, Pooled, bad, ensure_pool};

const DB: Backend = Backend::Redis;

/// The `redis` module table.
pub fn module(lua: &Lua, dbs: &Arc<Databases>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("ensure_pool", ensure_pool(lua, dbs, DB, make_pool)?)?;
    let d = dbs.clone();
    t.set(
        "cmd",
        lua.create_function(move |lua, args: Variadic<Value>| cmd(lua, &d, &args))?,
    )?;
    Ok(t)
}

/// Appends a script's argument: strings and numbers as they are, arrays element by element,
/// other tables as key, value, key, value.
fn push_arg(c: &mut redis::Cmd, v: &Value, depth: usize) -> mlua::Result<()> {
    match v {
        Value::String(s) => {
            c.arg(&s.as_bytes()[..]);
        }
        Value::Integer(i) => {
            c.arg(*i);
        }
        Value::Number(n) => {
            c.arg(n.to_string());
        }
        Value::Boolean(b) => {
            c.arg(b.to_string());
        }
        Value::Table(t) if depth < 4 => {
            let len = t.raw_len();
            if len > 0 {
                for i in 1..=len {
                    push_arg(c, &t.raw_get::<Value>(i)?, depth + 1)?;
                }
            } else {
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    push_arg(c, &k, depth + 1)?;
                    push_arg(c, &v, depth + 1)?;
                }
            }
        }
        other => {
            return Err(bad(format!(
                "redis.cmd: an argument is a {}",
                other.type_name()
            )));
        }
    }
    Ok(())
}

fn cmd(lua: &Lua, dbs: &Databases, args: &[Value]) -> mlua::Result<Value> {
    let (pool_id, command) = match args {
        [Value::String(p), Value::String(s), ..] => {
            (p.to_str()?.to_owned(), s.to_str()?.to_owned())
        }
        _ => return Err(bad("redis.cmd(pool_id, \"COMMAND args\", args...)")),
    };
    let mut words = command.split(' ').filter(|w| !w.is_empty());
    let Some(first) = words.next() else {
        return Err(bad("redis.cmd: no command"));
    };
    let mut c = redis::cmd(first);
    for w in words {
        c.arg(w);
    }
    for v in &args[2..] {
        push_arg(&mut c, v, 0)?;
    }
    let super::Pool::Redis(pool) = dbs.pool(DB, &pool_id)? else {
        return Err(bad(format!("redis: {pool_id:?} is not a redis pool")));
    };
    let reply = dbs.run("redis", async move {
        let mut conn = pool.get(&pool_id).await?;
        match c.query_async::<R>(&mut *conn).await {
            Ok(v) => Ok(v),
            Err(e) if matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension) => {
                tracing::warn!(target: "lua", pool = %pool_id, error = %e, "redis.cmd: error reply");
                Ok(R::Boolean(false))
            }
            Err(e) => Err(format!("redis.cmd ({pool_id}): {e}")),
        }
    })?;
    to_lua(lua, reply.map_err(bad)?, 0)
}

fn to_lua(lua: &Lua, v: R, depth: usize) -> mlua::Result<Value> {
    if depth > 32 {
        return Ok(Value::Nil);
    }
    let array = |items: Vec<R>| -> mlua::Result<Value> {
        let t = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.into_iter().enumerate() {
            t.raw_set(i + 1, to_lua(lua, item, depth + 1)?)?;
        }
        Ok(Value::Table(t))
    };
    Ok(match v {
        R::Nil => Value::Nil,
        R::Okay => Value::Boolean(true),
        R::SimpleString(s) if s == "OK" => Value::Boolean(true),
        R::SimpleString(s) => Value::String(lua.create_string(s)?),
        R::Int(i) => Value::String(lua.create_string(i.to_string())?),
        R::BulkString(b) => Value::String(lua.create_string(&b)?),
        R::Array(items) | R::Set(items) => array(items)?,
        R::Map(pairs) => array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())?,
        R::Attribute { data, .. } => to_lua(lua, *data, depth + 1)?,
        R::Double(d) => Value::String(lua.create_string(d.to_string())?),
        R::Boolean(b) => Value::Boolean(b),
        R::VerbatimString { text, .. } => Value::String(lua.create_string(text)?),
        R::BigNumber(n) => Value::String(lua.create_string(&n)?),
        R::Push { data, .. } => array(data)?,
        R::ServerError(_) => Value::Boolean(false),
        _ => Value::Nil,
    })
}

/// A new pool for `ensure_pool`'s options.
fn make_pool(o: &Options) -> mlua::Result<super::Pool> {
    let addr = ConnectionAddr::Tcp(
        o.string("host", "host")?,
        o.number("port", "port")?.clamp(1, 65535) as u16,
    );
    let mut redis = RedisConnectionInfo::default()
        .set_db(o.number("database", "database")?.min(1 << 20) as i64);
    let user = o.string("user", "user")?;
    if !user.is_empty() {
        redis = redis.set_username(user);
    }
    let password = o.string("password", "password")?;
    if !password.is_empty() {
        redis = redis.set_password(password);
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| bad(format!("redis.ensure_pool: {e}")))?
        .set_redis_settings(redis);
    let client = redis::Client::open(info).map_err(|e| bad(format!("redis.ensure_pool: {e}")))?;
    Ok(super::Pool::Redis(Pooled::new(
        client,
        o.number("size", "pool_size")?,
    )))
}
