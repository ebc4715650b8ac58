//! `mysql` and `mysql2` (MySQL and MariaDB, `specs/lua.md` 4): `ensure_pool`,
//! `execute(pool, sql, ...)` with `?` placeholders bound as a prepared statement,
//! `hash_method()` (the SQL that hashes the password the way the table stores it).

use std::sync::Arc;

use mlua::{Lua, Table, Value, Variadic};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Row, Value as My};

use super::settings::Backend;
use super::{Answer, Arg, Cell, Databases, Options, Pooled, bad, ensure_pool};

/// Opens and checks MySQL connections for bb8 (a connection is pinged when it is taken, so
/// one broken by a database restart is replaced instead of failing a query).
pub struct Manager(Opts);

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = mysql_async::Error;

    async fn connect(&self) -> Result<Conn, mysql_async::Error> {
        Conn::new(self.0.clone()).await
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), mysql_async::Error> {
        conn.ping().await
    }

    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

/// The module table for `db` (`mysql` or `mysql2`).
pub fn module(lua: &Lua, dbs: &Arc<Databases>, db: Backend) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("ensure_pool", ensure_pool(lua, dbs, db, make_pool)?)?;
    let d = dbs.clone();
    t.set(
        "execute",
        lua.create_function(move |lua, args: Variadic<Value>| execute(lua, &d, db, &args))?,
    )?;
    let d = dbs.clone();
    t.set(
        "hash_method",
        lua.create_function(move |_, ()| {
            Ok(hash_sql(&d.settings.get(db, "password_hash_method")))
        })?,
    )?;
    Ok(t)
}

/// The SQL that hashes the password (`?`) for a `password_hash_method`.
pub fn hash_sql(method: &str) -> &'static str {
    match method {
        "md5" => "MD5(?)",
        "sha1" => "SHA1(?)",
        "sha256" => "SHA2(?, 256)",
        _ => "PASSWORD(?)",
    }
}

fn value(a: &Arg) -> My {
    match a {
        Arg::Null => My::NULL,
        Arg::Bool(b) => My::Int(*b as i64),
        Arg::Int(i) => My::Int(*i),
        Arg::Num(f) => My::Double(*f),
        Arg::Text(t) => My::Bytes(t.clone()),
    }
}

fn cell(v: My) -> Cell {
    match v {
        My::NULL => Cell::Null,
        My::Bytes(b) => Cell::Text(b),
        My::Int(i) => Cell::Int(i),
        My::UInt(u) => i64::try_from(u).map_or(Cell::Num(u as f64), Cell::Int),
        My::Float(f) => Cell::Num(f.into()),
        My::Double(f) => Cell::Num(f),
        // Dates and times as MySQL writes them.
        other => Cell::Text(other.as_sql(true).trim_matches('\'').as_bytes().to_vec()),
    }
}

fn execute(lua: &Lua, dbs: &Databases, db: Backend, args: &[Value]) -> mlua::Result<Value> {
    let name = db.name();
    let (pool_id, sql, params) = Arg::execute(args, name)?;
    let params: Vec<My> = params.iter().map(value).collect();
    let super::Pool::Mysql(pool) = dbs.pool(db, &pool_id)? else {
        return Err(bad(format!("{name}: {pool_id:?} is not a {name} pool")));
    };
    let answer = dbs.run(name, async move {
        let mut conn = pool.get(&pool_id).await?;
        let params = if params.is_empty() {
            Params::Empty
        } else {
            Params::Positional(params)
        };
        let outcome = async {
            let mut result = conn.exec_iter(sql.as_str(), params).await?;
            let has_columns = result.columns().is_some_and(|c| !c.is_empty());
            if !has_columns {
                let changed = result.affected_rows() > 0;
                result.drop_result().await?;
                return Ok(Answer::Changed(changed));
            }
            let rows: Vec<Row> = result.collect().await?;
            let out = rows
                .into_iter()
                .map(|row| {
                    let names: Vec<String> = row
                        .columns_ref()
                        .iter()
                        .map(|c| c.name_str().into_owned())
                        .collect();
                    names
                        .into_iter()
                        .zip(row.unwrap().into_iter().map(cell))
                        .collect()
                })
                .collect();
            Ok::<_, mysql_async::Error>(Answer::Rows(out))
        }
        .await;
        match outcome {
            Ok(a) => Ok(a),
            Err(mysql_async::Error::Server(e)) => {
                tracing::warn!(target: "lua", pool = %pool_id, error = %e, "{name}.execute: the database refused the statement");
                Ok(Answer::Refused)
            }
            Err(e) => Err(format!("{name}.execute ({pool_id}): {e}")),
        }
    })?;
    answer.map_err(bad)?.into_lua(lua, None)
}

/// A new pool for `ensure_pool`'s options.
fn make_pool(o: &Options) -> mlua::Result<super::Pool> {
    let db = o.db;
    if db == Backend::Mysql2 && o.flag("ssl", "ssl")? {
        return Err(bad(
            "mysql2.ensure_pool: ssl is not supported by this broker yet: set \
                 vmq_diversity.mysql2.ssl = off",
        ));
    }
    let opts = OptsBuilder::default()
        .ip_or_hostname(o.string("host", "host")?)
        .tcp_port(o.number("port", "port")?.clamp(1, 65535) as u16)
        .user(Some(o.string("user", "user")?))
        .pass(Some(o.string("password", "password")?))
        .db_name(Some(o.string("database", "database")?));
    Ok(super::Pool::Mysql(Pooled::new(
        Manager(opts.into()),
        o.number("size", "pool_size")?,
    )))
}
