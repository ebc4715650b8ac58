//! Lua values outside a Lua state: what crosses between a session and a script's threads
//! (hook arguments in, return values out) and what `kv` keeps for every state and script.

use bytes::Bytes;
use std::ffi::{c_char, c_int};

use mlua::{Lua, Value, ffi};
use serde_json::{Map, Number, Value as Json};

/// Deepest table nesting copied out of a state.
const MAX_DEPTH: usize = 32;

/// A Lua value, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// `nil`.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Num(f64),
    /// A (byte) string.
    Str(Bytes),
    /// A table, as (key, value) pairs.
    Table(Vec<(Data, Data)>),
    /// A function, userdata or thread: not copied.
    Other,
}

impl Data {
    /// A string value.
    pub fn str(s: impl AsRef<[u8]>) -> Data {
        Data::Str(Bytes::copy_from_slice(s.as_ref()))
    }

    /// A table with string keys, in order; nil values left out.
    pub fn record(fields: impl IntoIterator<Item = (&'static str, Data)>) -> Data {
        let fields = fields.into_iter();
        let mut pairs = Vec::with_capacity(fields.size_hint().0);
        for (k, v) in fields {
            if !matches!(v, Data::Nil) {
                pairs.push((Data::Str(Bytes::from_static(k.as_bytes())), v));
            }
        }
        Data::Table(pairs)
    }

    /// An array (keys 1..n).
    pub fn array(items: Vec<Data>) -> Data {
        Data::Table(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Data::Int(i as i64 + 1), v))
                .collect(),
        )
    }

    /// An optional string: `nil` when absent.
    pub fn opt(s: Option<&str>) -> Data {
        s.map_or(Data::Nil, Data::str)
    }

    /// Builds the value in `lua`. Strings and tables are built in one protected call: mlua
    /// guards every value it makes with a protected call of its own when the state has a
    /// memory limit (ours do), which made building a hook's argument table (some 25 guarded
    /// steps) most of the cost of a hook call. Keys that Lua cannot hold (nil, NaN, a function)
    /// are left out, as are nil values.
    pub fn to_lua(&self, lua: &Lua) -> mlua::Result<Value> {
        Ok(match self {
            Data::Nil | Data::Other => Value::Nil,
            Data::Bool(b) => Value::Boolean(*b),
            Data::Int(i) => Value::Integer(*i),
            Data::Num(n) => Value::Number(*n),
            // SAFETY: `push` only calls Lua's C API on the state mlua hands it, inside mlua's
            // protected call, and holds nothing that needs dropping: a Lua error (out of
            // memory, a stack that cannot grow) unwinds through it by longjmp safely.
            Data::Str(_) | Data::Table(_) => unsafe {
                lua.exec_raw((), |state| push(state, self))?
            },
        })
    }

    /// Copies a value out of a state; too deep a table is an error.
    pub fn from_lua(v: &Value) -> mlua::Result<Data> {
        from_lua(v, 0)
    }

    /// A Lua array's items (integer keys), in order.
    pub fn items(&self) -> Vec<&Data> {
        let Data::Table(pairs) = self else {
            return Vec::new();
        };
        let mut v: Vec<(i64, &Data)> = pairs
            .iter()
            .filter_map(|(k, v)| match k {
                Data::Int(i) => Some((*i, v)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, v)| v).collect()
    }

    /// The value of a table's string key `name`.
    pub fn field(&self, name: &str) -> Option<&Data> {
        match self {
            Data::Table(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Data::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// Whether the table's keys are exactly 1..n.
    fn is_array(pairs: &[(Data, Data)]) -> bool {
        let mut keys: Vec<i64> = Vec::with_capacity(pairs.len());
        for (k, _) in pairs {
            match k {
                Data::Int(i) => keys.push(*i),
                _ => return false,
            }
        }
        keys.sort_unstable();
        keys.iter().enumerate().all(|(i, k)| *k == i as i64 + 1)
    }

    /// The value as JSON, as VerneMQ's `json.encode` writes it: array-like tables as arrays,
    /// other tables as objects with sorted keys, an empty table as `{}`. `None` for what JSON
    /// cannot hold (a table with mixed keys, a function).
    pub fn to_json(&self) -> Option<Json> {
        Some(match self {
            Data::Nil => Json::Null,
            Data::Bool(b) => Json::Bool(*b),
            Data::Int(i) => Json::from(*i),
            Data::Num(n) => Json::Number(Number::from_f64(*n)?),
            Data::Str(s) => Json::String(String::from_utf8_lossy(s).into_owned()),
            Data::Table(pairs) if pairs.is_empty() => Json::Object(Map::new()),
            Data::Table(pairs) if Data::is_array(pairs) => {
                let mut items: Vec<(i64, &Data)> = pairs
                    .iter()
                    .map(|(k, v)| match k {
                        Data::Int(i) => (*i, v),
                        _ => (0, v),
                    })
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Json::Array(
                    items
                        .into_iter()
                        .map(|(_, v)| v.to_json())
                        .collect::<Option<_>>()?,
                )
            }
            Data::Table(pairs) => {
                let mut fields: Vec<(String, Json)> = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let key = match k {
                        Data::Str(s) => String::from_utf8_lossy(s).into_owned(),
                        _ => return None,
                    };
                    fields.push((key, v.to_json()?));
                }
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Json::Object(fields.into_iter().collect())
            }
            Data::Other => return None,
        })
    }

    /// A JSON value as Lua data, as VerneMQ's `json.decode` gives it (`null` is the string
    /// `"null"`).
    pub fn from_json(j: &Json) -> Data {
        match j {
            Json::Null => Data::str("null"),
            Json::Bool(b) => Data::Bool(*b),
            Json::Number(n) => n
                .as_i64()
                .map(Data::Int)
                .unwrap_or_else(|| Data::Num(n.as_f64().unwrap_or(0.0))),
            Json::String(s) => Data::str(s),
            Json::Array(a) => Data::array(a.iter().map(Data::from_json).collect()),
            Json::Object(o) => Data::Table(
                o.iter()
                    .map(|(k, v)| (Data::str(k), Data::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// Pushes `d` onto `state`'s stack (one slot).
///
/// # Safety
/// `state` is a live Lua state inside a protected call, with room for one more value.
pub(super) unsafe fn push(state: *mut ffi::lua_State, d: &Data) {
    // SAFETY (every call below): `state` is live and has room, per the contract; strings are
    // copied by Lua from a slice that outlives the call.
    unsafe {
        match d {
            Data::Nil | Data::Other => ffi::lua_pushnil(state),
            Data::Bool(b) => ffi::lua_pushboolean(state, c_int::from(*b)),
            Data::Int(i) => ffi::lua_pushinteger(state, *i),
            Data::Num(n) => ffi::lua_pushnumber(state, *n),
            Data::Str(s) => {
                ffi::lua_pushlstring(state, s.as_ptr().cast::<c_char>(), s.len());
            }
            Data::Table(pairs) => {
                // A key and a value above the table; raises a Lua error when it cannot grow.
                ffi::luaL_checkstack(state, 3, std::ptr::null());
                let len = c_int::try_from(pairs.len()).unwrap_or(c_int::MAX);
                let array = matches!(pairs.first(), Some((Data::Int(1), _)));
                let (narr, nrec) = if array { (len, 0) } else { (0, len) };
                ffi::lua_createtable(state, narr, nrec);
                for (k, v) in pairs {
                    let bad_key = match k {
                        Data::Nil | Data::Other => true,
                        Data::Num(n) => n.is_nan(),
                        _ => false,
                    };
                    if bad_key || matches!(v, Data::Nil | Data::Other) {
                        continue;
                    }
                    push(state, k);
                    push(state, v);
                    ffi::lua_rawset(state, -3);
                }
            }
        }
    }
}

fn from_lua(v: &Value, depth: usize) -> mlua::Result<Data> {
    Ok(match v {
        Value::Nil => Data::Nil,
        Value::Boolean(b) => Data::Bool(*b),
        Value::Integer(i) => Data::Int(*i),
        Value::Number(n) => Data::Num(*n),
        Value::String(s) => Data::Str(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(t) => {
            if depth >= MAX_DEPTH {
                return Err(mlua::Error::runtime("table nested too deeply"));
            }
            let mut pairs = Vec::new();
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, v) = pair?;
                pairs.push((from_lua(&k, depth + 1)?, from_lua(&v, depth + 1)?));
            }
            Data::Table(pairs)
        }
        _ => Data::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Tables as sorted pair lists (Lua keeps no order), recursively.
    fn canonical(d: Data) -> Data {
        match d {
            Data::Table(pairs) => {
                let mut pairs: Vec<(Data, Data)> = pairs
                    .into_iter()
                    .map(|(k, v)| (canonical(k), canonical(v)))
                    .collect();
                pairs.sort_by_key(|(k, _)| format!("{k:?}"));
                Data::Table(pairs)
            }
            other => other,
        }
    }

    fn key() -> impl Strategy<Value = Data> {
        prop_oneof![
            any::<i64>().prop_map(Data::Int),
            any::<bool>().prop_map(Data::Bool),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Data::str),
        ]
    }

    fn value() -> impl Strategy<Value = Data> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Data::Bool),
            any::<i64>().prop_map(Data::Int),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |n| !n.is_nan())
                .prop_map(Data::Num),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Data::str),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                // Unique keys: a table has one value per key.
                proptest::collection::vec((key(), inner.clone()), 0..8).prop_map(|pairs| {
                    let unique: std::collections::BTreeMap<String, (Data, Data)> = pairs
                        .into_iter()
                        .map(|(k, v)| (format!("{k:?}"), (k, v)))
                        .collect();
                    Data::Table(unique.into_values().collect())
                }),
                proptest::collection::vec(inner, 0..8).prop_map(Data::array),
            ]
        })
    }

    proptest! {
        /// What goes into a state comes out the same, whatever the nesting and the bytes.
        #[test]
        fn values_cross_into_a_state_and_back(d in value()) {
            let lua = Lua::new();
            let _ = lua.set_memory_limit(64 << 20);
            let back = Data::from_lua(&d.to_lua(&lua).unwrap()).unwrap();
            prop_assert_eq!(canonical(back), canonical(d));
        }
    }

    #[test]
    fn what_lua_cannot_hold_is_left_out() {
        let lua = Lua::new();
        let _ = lua.set_memory_limit(64 << 20);
        let d = Data::Table(vec![
            (Data::Nil, Data::Int(1)),
            (Data::Num(f64::NAN), Data::Int(2)),
            (Data::Other, Data::Int(3)),
            (Data::str("gone"), Data::Nil),
            (Data::str("kept"), Data::Int(4)),
        ]);
        let back = Data::from_lua(&d.to_lua(&lua).unwrap()).unwrap();
        assert_eq!(back, Data::Table(vec![(Data::str("kept"), Data::Int(4))]));
        // A state out of memory is an error, not a crash.
        let _ = lua.set_memory_limit(lua.used_memory() + 1024);
        let big = Data::array(
            (0..10_000)
                .map(|i| Data::str(format!("value {i}")))
                .collect(),
        );
        assert!(big.to_lua(&lua).is_err());
    }

    #[test]
    fn json_as_vernemq_writes_it() {
        let t = Data::record(vec![
            ("format", Data::str("json")),
            ("awesome", Data::Bool(true)),
            ("qos", Data::Int(1)),
            ("half", Data::Num(0.5)),
            ("list", Data::array(vec![Data::Int(1), Data::Int(2)])),
            ("empty", Data::Table(vec![])),
        ]);
        assert_eq!(
            serde_json::to_string(&t.to_json().unwrap()).unwrap(),
            r#"{"awesome":true,"empty":{},"format":"json","half":0.5,"list":[1,2],"qos":1}"#
        );
        let mixed = Data::Table(vec![
            (Data::Int(1), Data::Int(1)),
            (Data::str("a"), Data::Int(2)),
        ]);
        assert!(mixed.to_json().is_none());
        let back = Data::from_json(&serde_json::json!({"a": null, "b": [true]}));
        assert_eq!(
            back,
            Data::Table(vec![
                (Data::str("a"), Data::str("null")),
                (Data::str("b"), Data::array(vec![Data::Bool(true)])),
            ])
        );
    }
}
