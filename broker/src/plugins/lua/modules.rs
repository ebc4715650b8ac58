//! The modules a script finds as globals, with VerneMQ's names and signatures
//! (`specs/lua.md` 4): `json`, `log`, `kv`, `http`, `crypto`, `bcrypt`, `obf`, `auth_cache`,
//! `vmq_api`, and the database modules of `db/`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use mlua::{Lua, Table, Value, Variadic};
use parking_lot::Mutex;
use sha2::Digest;

use super::auth_cache::{AuthCache, Decision};
use super::data::Data;
use super::db::{self, Databases, settings::DbSettings};
use crate::engine::BrokerHandle;

/// What every state of every script shares: `kv` tables, `http` pools, the runtime that runs
/// `http` requests (the Lua thread waits; no tokio worker does).
#[derive(Debug)]
pub struct Shared {
    /// `kv` tables by name: (type, entries).
    kv: Mutex<BTreeMap<String, KvTable>>,
    /// `http.ensure_pool` names.
    pools: Mutex<HashSet<String>>,
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// `obf`'s key: random per process.
    obf_key: [u8; 16],
    /// `auth_cache`: ACLs stored by scripts, deciding before any script is called.
    pub auth_cache: AuthCache,
    /// What `vmq_api` acts on, once the engine exists.
    pub broker: OnceLock<BrokerHandle>,
    /// The database modules' pools and settings.
    pub db: Arc<Databases>,
}

#[derive(Debug, Default)]
struct KvTable {
    kind: KvKind,
    entries: BTreeMap<Vec<u8>, Vec<Data>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum KvKind {
    #[default]
    Set,
    Bag,
    DuplicateBag,
}

impl Shared {
    /// Inside a tokio runtime.
    pub fn new(db: DbSettings) -> Result<Shared, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("vmq_diversity: cannot build the HTTP client: {e}"))?;
        let mut obf_key = [0u8; 16];
        for b in &mut obf_key {
            *b = fastrand::u8(..);
        }
        Ok(Shared {
            kv: Mutex::default(),
            pools: Mutex::default(),
            http,
            runtime: tokio::runtime::Handle::current(),
            obf_key,
            auth_cache: AuthCache::default(),
            broker: OnceLock::new(),
            db: Arc::new(Databases::new(db)),
        })
    }
}

fn bad(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}

fn table_field<T: mlua::FromLua>(t: &Table, key: &str, default: T) -> mlua::Result<T> {
    Ok(t.get::<Option<T>>(key)?.unwrap_or(default))
}

/// Installs every module as a global of `lua`.
pub fn install(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("json", json(lua)?)?;
    g.set("log", log(lua)?)?;
    g.set("kv", kv(lua, shared)?)?;
    g.set("http", http(lua, shared)?)?;
    g.set("crypto", crypto(lua)?)?;
    g.set("bcrypt", bcrypt(lua)?)?;
    g.set("obf", obf(lua, shared)?)?;
    g.set("auth_cache", auth_cache(lua, shared)?)?;
    g.set("vmq_api", vmq_api(lua, shared)?)?;
    db::install(lua, &shared.db)
}

fn json(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "encode",
        lua.create_function(|lua, v: Value| -> mlua::Result<Value> {
            if !matches!(v, Value::Table(_)) {
                return Err(bad("json.encode expects a table"));
            }
            match Data::from_lua(&v)?.to_json() {
                Some(j) => Ok(Value::String(lua.create_string(j.to_string())?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    t.set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| -> mlua::Result<Value> {
            match serde_json::from_slice::<serde_json::Value>(&s.as_bytes()) {
                Ok(j) => Data::from_json(&j).to_lua(lua),
                Err(_) => Ok(Value::Nil),
            }
        })?,
    )?;
    Ok(t)
}

fn log(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "info",
        lua.create_function(|_, s: String| {
            tracing::info!(target: "lua", "{s}");
            Ok(())
        })?,
    )?;
    t.set(
        "warning",
        lua.create_function(|_, s: String| {
            tracing::warn!(target: "lua", "{s}");
            Ok(())
        })?,
    )?;
    t.set(
        "error",
        lua.create_function(|_, s: String| {
            tracing::error!(target: "lua", "{s}");
            Ok(())
        })?,
    )?;
    t.set(
        "debug",
        lua.create_function(|_, s: String| {
            tracing::debug!(target: "lua", "{s}");
            Ok(())
        })?,
    )?;
    Ok(t)
}

fn key_bytes(k: &Value) -> mlua::Result<Vec<u8>> {
    match k {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(n.to_string().into_bytes()),
        _ => Err(bad("kv keys are strings")),
    }
}

fn kv(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let s = shared.clone();
    t.set(
        "ensure_table",
        lua.create_function(move |_, opts: Option<Table>| {
            let (name, kind) = match opts {
                Some(o) => (
                    table_field(&o, "name", "simple_kv".to_owned())?,
                    table_field(&o, "type", "set".to_owned())?,
                ),
                None => ("simple_kv".to_owned(), "set".to_owned()),
            };
            let kind = match kind.as_str() {
                "set" | "ordered_set" => KvKind::Set,
                "bag" => KvKind::Bag,
                "duplicate_bag" => KvKind::DuplicateBag,
                other => return Err(bad(format!("unknown kv table type {other:?}"))),
            };
            s.kv.lock().entry(name).or_insert(KvTable {
                kind,
                entries: BTreeMap::new(),
            });
            Ok(true)
        })?,
    )?;
    let insert = |new_only: bool| {
        let s = shared.clone();
        move |_: &Lua, (name, pairs): (String, Table)| -> mlua::Result<bool> {
            let mut items = Vec::new();
            for pair in pairs.pairs::<Value, Value>() {
                let (k, v) = pair?;
                items.push((key_bytes(&k)?, Data::from_lua(&v)?));
            }
            let mut kv = s.kv.lock();
            let table = kv
                .get_mut(&name)
                .ok_or_else(|| bad(format!("unknown kv table {name:?} (kv.ensure_table first)")))?;
            if new_only && items.iter().any(|(k, _)| table.entries.contains_key(k)) {
                return Ok(false);
            }
            for (k, v) in items {
                let slot = table.entries.entry(k).or_default();
                match table.kind {
                    KvKind::Set => *slot = vec![v],
                    KvKind::Bag if slot.contains(&v) => {}
                    KvKind::Bag | KvKind::DuplicateBag => slot.push(v),
                }
            }
            Ok(true)
        }
    };
    t.set("insert", lua.create_function(insert(false))?)?;
    t.set("insert_new", lua.create_function(insert(true))?)?;
    let s = shared.clone();
    t.set(
        "lookup",
        lua.create_function(move |lua, (name, key): (String, Value)| {
            let k = key_bytes(&key)?;
            let values = {
                let kv = s.kv.lock();
                let table = kv
                    .get(&name)
                    .ok_or_else(|| bad(format!("unknown kv table {name:?}")))?;
                table.entries.get(&k).cloned().unwrap_or_default()
            };
            Data::array(values).to_lua(lua)
        })?,
    )?;
    let s = shared.clone();
    t.set(
        "delete",
        lua.create_function(move |_, (name, key): (String, Value)| {
            let k = key_bytes(&key)?;
            let mut kv = s.kv.lock();
            let table = kv
                .get_mut(&name)
                .ok_or_else(|| bad(format!("unknown kv table {name:?}")))?;
            table.entries.remove(&k);
            Ok(true)
        })?,
    )?;
    let s = shared.clone();
    t.set(
        "delete_all",
        lua.create_function(move |_, name: String| {
            let mut kv = s.kv.lock();
            let table = kv
                .get_mut(&name)
                .ok_or_else(|| bad(format!("unknown kv table {name:?}")))?;
            table.entries.clear();
            Ok(true)
        })?,
    )?;
    Ok(t)
}

fn http(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let s = shared.clone();
    t.set(
        "ensure_pool",
        lua.create_function(move |_, opts: Option<Table>| {
            let name = match opts {
                Some(o) => table_field(&o, "pool_id", "pool_http".to_owned())?,
                None => "pool_http".to_owned(),
            };
            s.pools.lock().insert(name);
            Ok(true)
        })?,
    )?;
    for method in ["get", "post", "put", "delete"] {
        let s = shared.clone();
        t.set(
            method,
            lua.create_function(move |lua, args: Variadic<Value>| request(lua, &s, method, args))?,
        )?;
    }
    t.set("body", lua.create_function(|_, v: Value| Ok(v))?)?;
    Ok(t)
}

/// `http.<method>(pool, url [, body [, headers]])`: the answer as a table, or `false`.
fn request(lua: &Lua, s: &Shared, method: &str, args: Variadic<Value>) -> mlua::Result<Value> {
    let mut args = args.into_iter();
    let pool = match args.next() {
        Some(Value::String(p)) => p.to_str()?.to_owned(),
        _ => return Err(bad("http: the first argument is a pool id")),
    };
    if !s.pools.lock().contains(&pool) {
        return Err(bad(format!(
            "http: unknown pool {pool:?} (http.ensure_pool first)"
        )));
    }
    let url = match args.next() {
        Some(Value::String(u)) => u.to_str()?.to_owned(),
        _ => return Err(bad("http: the second argument is a URL")),
    };
    let mut req = s.http.request(
        method
            .to_uppercase()
            .parse()
            .unwrap_or(reqwest::Method::GET),
        &url,
    );
    match args.next() {
        None | Some(Value::Nil) => {}
        Some(Value::String(b)) => req = req.body(b.as_bytes().to_vec()),
        Some(Value::Table(form)) => {
            let mut pairs = Vec::new();
            for pair in form.pairs::<String, String>() {
                pairs.push(pair?);
            }
            req = req.body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish(),
            );
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        Some(_) => return Err(bad("http: the body is a string or a table")),
    }
    if let Some(Value::Table(headers)) = args.next() {
        for pair in headers.pairs::<String, String>() {
            let (k, v) = pair?;
            req = req.header(k, v);
        }
    }
    let answer = s.runtime.block_on(async move {
        let r = req.send().await?;
        let status = r.status().as_u16();
        let headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = r.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    });
    match answer {
        Ok((status, headers, body)) => {
            let t = lua.create_table()?;
            t.set("status", status)?;
            let h = lua.create_table()?;
            for (k, v) in headers {
                h.set(k, v)?;
            }
            t.set("headers", h)?;
            t.set("ref", lua.create_string(&body)?)?;
            Ok(Value::Table(t))
        }
        Err(e) => {
            tracing::warn!(target: "lua", url, error = %e, "http.{method} failed");
            Ok(Value::Boolean(false))
        }
    }
}

fn crypto(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "hash",
        lua.create_function(|lua, (alg, data): (String, mlua::LuaString)| {
            let data = data.as_bytes();
            let digest: Vec<u8> = match alg.as_str() {
                "md5" => md5::Md5::digest(&data[..]).to_vec(),
                "sha" => sha1::Sha1::digest(&data[..]).to_vec(),
                "sha224" => sha2::Sha224::digest(&data[..]).to_vec(),
                "sha256" => sha2::Sha256::digest(&data[..]).to_vec(),
                "sha384" => sha2::Sha384::digest(&data[..]).to_vec(),
                "sha512" => sha2::Sha512::digest(&data[..]).to_vec(),
                "sha3_224" => sha3::Sha3_224::digest(&data[..]).to_vec(),
                "sha3_256" => sha3::Sha3_256::digest(&data[..]).to_vec(),
                "sha3_384" => sha3::Sha3_384::digest(&data[..]).to_vec(),
                "sha3_512" => sha3::Sha3_512::digest(&data[..]).to_vec(),
                other => {
                    return Err(bad(format!(
                        "crypto.hash: unsupported algorithm {other:?} (md5, sha, sha224, \
                         sha256, sha384, sha512, sha3_224, sha3_256, sha3_384, sha3_512)"
                    )));
                }
            };
            lua.create_string(&digest)
        })?,
    )?;
    Ok(t)
}

/// bcrypt's base64 alphabet, without padding.
fn bcrypt_b64() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::BCRYPT,
        base64::engine::general_purpose::NO_PAD,
    )
}

fn bcrypt(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "gen_salt",
        lua.create_function(|_, cost: Option<u32>| {
            let mut salt = [0u8; 16];
            for b in &mut salt {
                *b = fastrand::u8(..);
            }
            Ok(format!(
                "$2b${:02}${}",
                cost.unwrap_or(12),
                bcrypt_b64().encode(salt)
            ))
        })?,
    )?;
    t.set(
        "hashpw",
        lua.create_function(|_, (password, salt): (mlua::LuaString, String)| {
            // `$2a$12$<22 characters of salt>[<31 of hash>]`.
            let parts: Vec<&str> = salt.split('$').collect();
            let (version, cost, rest) = match parts.as_slice() {
                ["", v, c, rest] if rest.len() >= 22 => (*v, *c, *rest),
                _ => return Err(bad("bcrypt.hashpw: not a bcrypt salt or hash")),
            };
            let cost: u32 = cost.parse().map_err(|_| bad("bcrypt.hashpw: bad cost"))?;
            let raw = bcrypt_b64()
                .decode(&rest[..22])
                .map_err(|_| bad("bcrypt.hashpw: bad salt"))?;
            let salt: [u8; 16] = raw
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| bad("bcrypt.hashpw: bad salt"))?;
            let version = match version {
                "2a" => ::bcrypt::Version::TwoA,
                "2x" => ::bcrypt::Version::TwoX,
                "2y" => ::bcrypt::Version::TwoY,
                _ => ::bcrypt::Version::TwoB,
            };
            let parts = ::bcrypt::hash_with_salt(&password.as_bytes()[..], cost, salt)
                .map_err(|e| bad(format!("bcrypt.hashpw: {e}")))?;
            Ok(parts.format_for_version(version))
        })?,
    )?;
    Ok(t)
}

const OBF_PREFIX: &[u8] = b"\x00vmq-obf:";

fn obf(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let key = shared.obf_key;
    t.set(
        "encrypt",
        lua.create_function(move |lua, s: mlua::LuaString| {
            let mut out = OBF_PREFIX.to_vec();
            out.extend(
                s.as_bytes()
                    .iter()
                    .zip(key.iter().cycle())
                    .map(|(b, k)| b ^ k),
            );
            lua.create_string(&out)
        })?,
    )?;
    t.set(
        "decrypt",
        lua.create_function(move |lua, s: mlua::LuaString| {
            let bytes = s.as_bytes();
            match bytes.strip_prefix(OBF_PREFIX) {
                Some(rest) => {
                    let plain: Vec<u8> = rest
                        .iter()
                        .zip(key.iter().cycle())
                        .map(|(b, k)| b ^ k)
                        .collect();
                    lua.create_string(&plain)
                }
                // Passwords reach scripts in plain text: decrypt leaves them as they are.
                None => Ok(s.clone()),
            }
        })?,
    )?;
    Ok(t)
}

fn opt_table(v: Value) -> mlua::Result<Option<Data>> {
    match v {
        Value::Nil => Ok(None),
        Value::Table(_) => Ok(Some(Data::from_lua(&v)?)),
        _ => Err(bad("auth_cache: ACLs are a table or nil")),
    }
}

fn decision(lua: &Lua, d: Decision) -> mlua::Result<Value> {
    match d {
        Decision::Allowed(None) => Ok(Value::Boolean(true)),
        Decision::Allowed(Some(m)) => m.to_lua(lua),
        Decision::Refused | Decision::NoEntry => Ok(Value::Boolean(false)),
    }
}

fn auth_cache(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let s = shared.clone();
    t.set(
        "insert",
        lua.create_function(
            move |_, (mp, cid, user, publish, subscribe): (String, String, String, Value, Value)| {
                let (p, s2) = (opt_table(publish)?, opt_table(subscribe)?);
                Ok(s.auth_cache.insert(&mp, &cid, &user, p.as_ref(), s2.as_ref()))
            },
        )?,
    )?;
    let s = shared.clone();
    t.set(
        "match_publish",
        lua.create_function(
            move |lua,
                  (mp, cid, topic, qos, payload, retain): (
                String,
                String,
                String,
                i64,
                mlua::LuaString,
                bool,
            )| {
                let size = payload.as_bytes().len();
                decision(
                    lua,
                    s.auth_cache
                        .publish(&mp, &cid, &topic, qos.clamp(0, 255) as u8, size, retain),
                )
            },
        )?,
    )?;
    let s = shared.clone();
    t.set(
        "match_subscribe",
        lua.create_function(
            move |lua, (mp, cid, topic, qos): (String, String, String, i64)| {
                decision(
                    lua,
                    s.auth_cache
                        .subscribe(&mp, &cid, &[(&topic, qos.clamp(0, 255) as u8)]),
                )
            },
        )?,
    )?;
    Ok(t)
}

/// A `{mountpoint = ..., client_id = ...}` table's two strings; `function` names the caller
/// in the error.
fn subscriber_id(id: &Table, function: &str) -> mlua::Result<(String, String)> {
    let field = |name: &str| {
        id.get::<Option<String>>(name)?
            .ok_or_else(|| bad(format!("vmq_api.{function}: no {name}")))
    };
    Ok((field("mountpoint")?, field("client_id")?))
}

fn vmq_api(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let s = shared.clone();
    t.set(
        "disconnect_by_subscriber_id",
        lua.create_function(move |_, (id, _opts): (Table, Option<Table>)| {
            let (mp, cid) = subscriber_id(&id, "disconnect_by_subscriber_id")?;
            let Some(broker) = s.broker.get().cloned() else {
                return Ok("not_found");
            };
            let done = s.runtime.block_on(broker.disconnect(
                &mp,
                &cid,
                crate::mqtt::DisconnectReason::AdministrativeAction,
            ));
            Ok(if done { "ok" } else { "not_found" })
        })?,
    )?;
    let s = shared.clone();
    t.set(
        "reauthorize_subscriptions",
        lua.create_function(
            move |_, (username, id, _opts): (Option<String>, Table, Option<Table>)| {
                let (mp, cid) = subscriber_id(&id, "reauthorize_subscriptions")?;
                // Queued to the session's connection, never run here: the hooks it calls may
                // be this very script's, whose state is busy with this call.
                let found = s
                    .broker
                    .get()
                    .is_some_and(|b| b.reauthorize_subscriptions(&mp, &cid, username));
                Ok(if found { "ok" } else { "not_found" })
            },
        )?,
    )?;
    Ok(t)
}
