//! `postgres` and `cockroachdb` (`specs/lua.md` 4): `ensure_pool`, `execute(pool, sql, ...)`
//! with `$1..$n` bound by the extended protocol, `hash_method()`.

use std::error::Error as StdError;
use std::sync::Arc;

use bb8_postgres::PostgresConnectionManager;
use bytes::{BufMut, BytesMut};
use mlua::{Lua, Table, Value, Variadic};
use tokio_postgres::NoTls;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::settings::Backend;
use super::{Answer, Arg, CONNECT_TIMEOUT, Cell, Databases, Options, Pooled, bad, ensure_pool};
use crate::plugins::client_tls::ClientTls;

/// Makes PostgreSQL connections (without TLS) for bb8.
pub type Manager = PostgresConnectionManager<NoTls>;

/// Makes PostgreSQL connections over TLS (`ssl = on`) for bb8.
pub type TlsManager = PostgresConnectionManager<MakeRustlsConnect>;

/// The module table for `db` (PostgreSQL or CockroachDB: the same wire protocol).
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
        lua.create_function(move |_, ()| Ok(d.settings.get(db, "password_hash_method")))?,
    )?;
    Ok(t)
}

fn execute(lua: &Lua, dbs: &Databases, db: Backend, args: &[Value]) -> mlua::Result<Value> {
    let name = db.name();
    let (pool_id, sql, params) = Arg::execute(args, name)?;
    let answer = match dbs.pool(db, &pool_id)? {
        super::Pool::Postgres(pool) => dbs.run(name, query(pool, pool_id, sql, params, name))?,
        super::Pool::PostgresTls(pool) => dbs.run(name, query(pool, pool_id, sql, params, name))?,
        _ => return Err(bad(format!("{name}: {pool_id:?} is not a {name} pool"))),
    };
    answer.map_err(bad)?.into_lua(lua, Some("null"))
}

/// Runs `sql` on a connection of `pool` (with or without TLS).
async fn query<M>(
    pool: Pooled<M>,
    pool_id: String,
    sql: String,
    params: Vec<Arg>,
    name: &str,
) -> Result<Answer, String>
where
    M: bb8::ManageConnection<Connection = tokio_postgres::Client>,
    M::Error: std::error::Error,
{
    let conn = pool.get(&pool_id).await?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    let outcome = async {
        let stmt = conn.prepare(&sql).await?;
        if stmt.columns().is_empty() {
            return Ok(Answer::Changed(conn.execute(&stmt, &refs).await? > 0));
        }
        let rows = conn.query(&stmt, &refs).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut cells = Vec::with_capacity(row.len());
            for (i, col) in row.columns().iter().enumerate() {
                cells.push((col.name().to_owned(), row.try_get::<_, Cell>(i)?));
            }
            out.push(cells);
        }
        Ok::<_, tokio_postgres::Error>(Answer::Rows(out))
    }
    .await;
    match outcome {
        Ok(a) => Ok(a),
        Err(e) if e.as_db_error().is_some() => {
            let error = e.as_db_error().map(|d| d.to_string()).unwrap_or_default();
            tracing::warn!(target: "lua", pool = %pool_id, error, "{name}.execute: the database refused the statement");
            Ok(Answer::Refused)
        }
        Err(e) => Err(format!("{name}.execute ({pool_id}): {e}")),
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Arg {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let text_like = matches!(
            *ty,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON
        ) || ty.name() == "citext";
        let int = |what: &Arg| -> Result<i64, BoxError> {
            match what {
                Arg::Int(i) => Ok(*i),
                Arg::Num(f) if f.fract() == 0.0 => Ok(*f as i64),
                Arg::Bool(b) => Ok(*b as i64),
                Arg::Text(t) => Ok(std::str::from_utf8(t)?.trim().parse()?),
                _ => Err("not a number".into()),
            }
        };
        let num = |what: &Arg| -> Result<f64, BoxError> {
            match what {
                Arg::Int(i) => Ok(*i as f64),
                Arg::Num(f) => Ok(*f),
                Arg::Text(t) => Ok(std::str::from_utf8(t)?.trim().parse()?),
                _ => Err("not a number".into()),
            }
        };
        match (self, ty) {
            (Arg::Null, _) => return Ok(IsNull::Yes),
            (_, &Type::BOOL) => {
                let b = match self {
                    Arg::Bool(b) => *b,
                    Arg::Text(t) => matches!(&t[..], b"t" | b"true" | b"on" | b"1"),
                    other => int(other)? != 0,
                };
                out.put_u8(b as u8);
            }
            (_, &Type::INT2) => out.put_i16(i16::try_from(int(self)?)?),
            (_, &Type::INT4) => out.put_i32(i32::try_from(int(self)?)?),
            (_, &Type::INT8) => out.put_i64(int(self)?),
            (_, &Type::OID) => out.put_u32(u32::try_from(int(self)?)?),
            (_, &Type::FLOAT4) => out.put_f32(num(self)? as f32),
            (_, &Type::FLOAT8) => out.put_f64(num(self)?),
            (_, &Type::JSONB) => {
                out.put_u8(1);
                out.put_slice(&text(self));
            }
            _ if text_like => out.put_slice(&text(self)),
            _ => {
                return Err(format!(
                    "a parameter of type {ty} cannot be bound from Lua: cast it in the SQL \
                     (e.g. $1::text::{ty})"
                )
                .into());
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// An argument as text.
fn text(a: &Arg) -> Vec<u8> {
    match a {
        Arg::Null => Vec::new(),
        Arg::Bool(b) => b.to_string().into_bytes(),
        Arg::Int(i) => i.to_string().into_bytes(),
        Arg::Num(f) => f.to_string().into_bytes(),
        Arg::Text(t) => t.clone(),
    }
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell, BoxError> {
        Ok(match *ty {
            Type::BOOL => Cell::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Cell::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Cell::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::OID => Cell::Int(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Cell::Num(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Cell::Num(f64::from_sql(ty, raw)?),
            // jsonb's binary form is a version byte before the text.
            Type::JSONB => Cell::Text(raw.get(1..).unwrap_or_default().to_vec()),
            // Text types (and JSON) arrive as their bytes; any other type in its binary form,
            // so a script casts it to text in the query.
            _ => Cell::Text(raw.to_vec()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Cell, BoxError> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A new pool for `ensure_pool`'s options.
fn make_pool(o: &Options) -> mlua::Result<super::Pool> {
    let db = o.db;
    let tls = if o.flag("ssl", "ssl")? {
        let path = |key: &str, config_key: &str| -> mlua::Result<Option<std::path::PathBuf>> {
            let v = o.string(key, config_key)?;
            Ok((!v.is_empty()).then(|| v.into()))
        };
        let settings = ClientTls {
            cafile: path("cacertfile", "cafile")?,
            system_cas: o.flag("use_system_cas", "ssl.use_system_cas")?,
            certfile: path("certfile", "certfile")?,
            keyfile: path("keyfile", "keyfile")?,
            verify_peer: o.string("verify", "ssl.verify")? != "verify_none",
            tls_version: None,
        };
        let config = settings
            .config(&format!("vmq_diversity.{}", db.name()))
            .map_err(bad)?;
        Some(MakeRustlsConnect::new(config))
    } else {
        None
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(o.string("host", "host")?)
        .port(o.number("port", "port")?.clamp(1, 65535) as u16)
        .user(o.string("user", "user")?)
        .password(o.string("password", "password")?)
        .dbname(o.string("database", "database")?)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("vmq_diversity");
    if tls.is_some() {
        // ssl = on means TLS or no connection, never a quiet fall back to plain text.
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    let size = o.number("size", "pool_size")?;
    Ok(match tls {
        Some(tls) => super::Pool::PostgresTls(Pooled::new(
            PostgresConnectionManager::new(config, tls),
            size,
        )),
        None => super::Pool::Postgres(Pooled::new(
            PostgresConnectionManager::new(config, NoTls),
            size,
        )),
    })
}
