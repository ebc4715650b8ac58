//! The database modules a script finds as globals (`specs/lua.md` 4): `postgres` and
//! `cockroachdb`, `mysql` and `mysql2` (MySQL/MariaDB), `redis`, `memcached`, with VerneMQ's
//! names, signatures and answers. `mongodb` raises a clear error: no MongoDB server can be
//! installed where this broker is tested, so it is not built.
//!
//! Each `ensure_pool` name gets one pool (bb8 for the SQL databases and Redis, r2d2 inside the
//! memcache client), created without connecting: a database that is down when a script loads
//! does not stop it loading, and a pool whose database comes back connects again by itself
//! (each connection is checked when it is taken). Queries run on the broker's tokio runtime;
//! the Lua thread that asked waits for the answer, no tokio worker does. Query arguments are
//! always bound, never put into the SQL text.
//!
//! Failures: a database that cannot be reached, a broken connection or a timeout raise a Lua
//! error the script can catch with `pcall` (a hook that lets it through is an error, so an auth
//! hook refuses: never allowed by accident); an error the database answers (bad SQL, a Redis
//! error reply) gives `false`, as in VerneMQ, and is logged.

mod memcached;
mod mysql;
mod postgres;
mod redis;
pub mod settings;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table, Value};
use parking_lot::Mutex;

use settings::{Backend, DbSettings};

/// Longest a query (with the wait for a connection) may take before the script gets an error.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A pool of one module.
#[derive(Clone)]
enum Pool {
    Postgres(Pooled<postgres::Manager>),
    PostgresTls(Pooled<postgres::TlsManager>),
    Mysql(Pooled<mysql::Manager>),
    Redis(Pooled<::redis::Client>),
    Memcached(Arc<::memcache::Client>),
}

/// A bb8 pool and the last error its connection attempts met: bb8 connects in the background
/// and a waiting `get` only learns that it timed out, so the reason comes from here.
struct Pooled<M: bb8::ManageConnection> {
    pool: bb8::Pool<M>,
    last_error: LastError,
}

impl<M: bb8::ManageConnection> Clone for Pooled<M> {
    fn clone(&self) -> Self {
        Pooled {
            pool: self.pool.clone(),
            last_error: self.last_error.clone(),
        }
    }
}

impl<M: bb8::ManageConnection> Pooled<M>
where
    M::Error: std::error::Error,
{
    /// A pool of up to `size` connections made by `manager`, none made yet.
    fn new(manager: M, size: u64) -> Pooled<M> {
        let last_error = LastError::default();
        let pool = bb8::Pool::builder()
            .max_size(size.clamp(1, 1000) as u32)
            .connection_timeout(CONNECT_TIMEOUT)
            .retry_connection(false)
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(manager);
        Pooled { pool, last_error }
    }

    /// A connection, or why there is none.
    async fn get(&self, id: &str) -> Result<bb8::PooledConnection<'_, M>, String> {
        self.pool.get().await.map_err(|e| {
            let why = match e {
                bb8::RunError::User(e) => with_causes(&e),
                bb8::RunError::TimedOut => self
                    .last_error
                    .0
                    .lock()
                    .clone()
                    .unwrap_or_else(|| format!("no connection within {CONNECT_TIMEOUT:?}")),
            };
            format!("cannot connect to the database ({id}): {why}")
        })
    }
}

/// An error and what caused it ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// The last error a pool's connection attempts met.
#[derive(Clone, Debug, Default)]
struct LastError(Arc<Mutex<Option<String>>>);

impl<E: std::error::Error> bb8::ErrorSink<E> for LastError {
    fn sink(&self, e: E) {
        *self.0.lock() = Some(with_causes(&e));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(self.clone())
    }
}

/// The database modules' state, shared by every state of every script.
pub struct Databases {
    settings: DbSettings,
    pools: Mutex<HashMap<(Backend, String), Pool>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Databases")
            .field("pools", &self.pools.lock().len())
            .finish()
    }
}

fn bad(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}

impl Databases {
    /// Inside a tokio runtime.
    pub fn new(settings: DbSettings) -> Databases {
        Databases {
            settings,
            pools: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Runs `fut` on the runtime and waits for it (on a Lua thread), at most [`QUERY_TIMEOUT`].
    fn run<T>(&self, what: &str, fut: impl Future<Output = T>) -> mlua::Result<T> {
        self.runtime
            .block_on(async { tokio::time::timeout(QUERY_TIMEOUT, fut).await })
            .map_err(|_| bad(format!("{what}: no answer within {QUERY_TIMEOUT:?}")))
    }

    fn pool(&self, db: Backend, id: &str) -> mlua::Result<Pool> {
        self.pools
            .lock()
            .get(&(db, id.to_owned()))
            .cloned()
            .ok_or_else(|| {
                bad(format!(
                    "{}: unknown pool {id:?} ({}.ensure_pool first)",
                    db.name(),
                    module(db)
                ))
            })
    }

    /// Makes pool `id` of `db` unless it exists (VerneMQ keeps the first one's options).
    fn ensure(
        &self,
        db: Backend,
        id: String,
        make: impl FnOnce() -> mlua::Result<Pool>,
    ) -> mlua::Result<bool> {
        // bb8 starts its reaper on the runtime.
        let _runtime = self.runtime.enter();
        let mut pools = self.pools.lock();
        if !pools.contains_key(&(db, id.clone())) {
            let pool = make()?;
            pools.insert((db, id), pool);
        }
        Ok(true)
    }
}

/// `<module>.ensure_pool(options)`: makes the pool with `make` unless its id exists.
fn ensure_pool(
    lua: &Lua,
    dbs: &Arc<Databases>,
    db: Backend,
    make: fn(&Options) -> mlua::Result<Pool>,
) -> mlua::Result<mlua::Function> {
    let d = dbs.clone();
    lua.create_function(move |_, table: Option<Table>| {
        let o = Options {
            table,
            db,
            settings: &d.settings,
        };
        let id = o.pool_id()?;
        d.ensure(db, id, || make(&o))
    })
}

/// The Lua module's name of a config section.
fn module(db: Backend) -> &'static str {
    match db {
        Backend::Memcache => "memcached",
        other => other.name(),
    }
}

/// `ensure_pool`'s options: the script's table, falling back to the config.
struct Options<'a> {
    table: Option<Table>,
    db: Backend,
    settings: &'a DbSettings,
}

impl Options<'_> {
    fn string(&self, key: &str, config_key: &str) -> mlua::Result<String> {
        if let Some(t) = &self.table {
            match t.get::<Value>(key)? {
                Value::Nil => {}
                Value::String(s) => return Ok(s.to_str()?.to_owned()),
                Value::Integer(i) => return Ok(i.to_string()),
                Value::Boolean(b) => return Ok(if b { "on" } else { "off" }.to_owned()),
                other => {
                    return Err(bad(format!(
                        "{}.ensure_pool: {key} is a {}",
                        module(self.db),
                        other.type_name()
                    )));
                }
            }
        }
        Ok(self.settings.get(self.db, config_key))
    }

    fn number(&self, key: &str, config_key: &str) -> mlua::Result<u64> {
        let v = self.string(key, config_key)?;
        v.parse().map_err(|_| {
            bad(format!(
                "{}.ensure_pool: {key} is not a number: {v:?}",
                module(self.db)
            ))
        })
    }

    fn flag(&self, key: &str, config_key: &str) -> mlua::Result<bool> {
        let v = self.string(key, config_key)?;
        Ok(matches!(v.as_str(), "on" | "true"))
    }

    fn pool_id(&self) -> mlua::Result<String> {
        let default = format!("pool_{}", module(self.db));
        match &self.table {
            Some(t) => Ok(t.get::<Option<String>>("pool_id")?.unwrap_or(default)),
            None => Ok(default),
        }
    }
}

/// Installs the database modules as globals of `lua`.
pub fn install(lua: &Lua, dbs: &Arc<Databases>) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("postgres", postgres::module(lua, dbs, Backend::Postgres)?)?;
    g.set(
        "cockroachdb",
        postgres::module(lua, dbs, Backend::Cockroachdb)?,
    )?;
    g.set("mysql", mysql::module(lua, dbs, Backend::Mysql)?)?;
    g.set("mysql2", mysql::module(lua, dbs, Backend::Mysql2)?)?;
    g.set("redis", redis::module(lua, dbs)?)?;
    g.set("memcached", memcached::module(lua, dbs)?)?;
    g.set("mongodb", unavailable(lua)?)?;
    Ok(())
}

/// `mongodb`: every function of it raises an error that says why it is not there.
fn unavailable(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(|lua, (_t, field): (Value, String)| {
            lua.create_function(move |_, _: mlua::Variadic<Value>| -> mlua::Result<()> {
                Err(bad(format!(
                    "mongodb.{field}: MongoDB is not supported by this broker (no mongodb module)"
                )))
            })
        })?,
    )?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

/// A query argument from a script.
#[derive(Clone, Debug, PartialEq)]
enum Arg {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Text(Vec<u8>),
}

impl Arg {
    fn from_lua(v: &Value, module: &str, n: usize) -> mlua::Result<Arg> {
        Ok(match v {
            Value::Nil => Arg::Null,
            Value::Boolean(b) => Arg::Bool(*b),
            Value::Integer(i) => Arg::Int(*i),
            Value::Number(f) => Arg::Num(*f),
            Value::String(s) => Arg::Text(s.as_bytes().to_vec()),
            other => {
                return Err(bad(format!(
                    "{module}.execute: argument {n} is a {}: strings, numbers, booleans or nil",
                    other.type_name()
                )));
            }
        })
    }

    /// `<module>.execute(pool_id, sql, args...)`'s parts: the pool, the SQL text, the
    /// arguments to bind.
    fn execute(args: &[Value], module: &str) -> mlua::Result<(String, String, Vec<Arg>)> {
        let [Value::String(pool), Value::String(sql), rest @ ..] = args else {
            return Err(bad(format!("{module}.execute(pool_id, sql, args...)")));
        };
        let params = rest
            .iter()
            .enumerate()
            .map(|(i, v)| Arg::from_lua(v, module, i + 1))
            .collect::<mlua::Result<_>>()?;
        Ok((pool.to_str()?.to_owned(), sql.to_str()?.to_owned(), params))
    }
}

/// A row's value on its way into Lua.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Text(Vec<u8>),
}

/// What `execute` answers: rows for a query that returns columns, else whether a row changed.
enum Answer {
    Rows(Vec<Vec<(String, Cell)>>),
    Changed(bool),
    /// The database refused the statement: logged, `false` for the script.
    Refused,
}

impl Answer {
    /// `null` is what VerneMQ's PostgreSQL module gives for SQL NULL (the string "null"); the
    /// MySQL modules leave the column out (`nil`).
    fn into_lua(self, lua: &Lua, null: Option<&str>) -> mlua::Result<Value> {
        match self {
            Answer::Changed(b) => Ok(Value::Boolean(b)),
            Answer::Refused => Ok(Value::Boolean(false)),
            Answer::Rows(rows) => {
                let list = lua.create_table_with_capacity(rows.len(), 0)?;
                for (i, row) in rows.into_iter().enumerate() {
                    let t = lua.create_table_with_capacity(0, row.len())?;
                    for (name, cell) in row {
                        let v = match cell {
                            Cell::Null => match null {
                                Some(s) => Value::String(lua.create_string(s)?),
                                None => Value::Nil,
                            },
                            Cell::Bool(b) => Value::Boolean(b),
                            Cell::Int(n) => Value::Integer(n),
                            Cell::Num(n) => Value::Number(n),
                            Cell::Text(b) => Value::String(lua.create_string(&b)?),
                        };
                        t.raw_set(name, v)?;
                    }
                    list.raw_set(i + 1, t)?;
                }
                Ok(Value::Table(list))
            }
        }
    }
}
