//! Lua values outside a Lua state: what crosses between a session and a script's threads
//! (hook arguments in, return values out) and what `kv` keeps for every state and script.

use bytes::Bytes;
use mlua::{Lua, Value};
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

    /// A table with string keys, in order.
    pub fn record(fields: Vec<(&'static str, Data)>) -> Data {
        Data::Table(
            fields
                .into_iter()
                .filter(|(_, v)| *v != Data::Nil)
                .map(|(k, v)| (Data::Str(Bytes::from_static(k.as_bytes())), v))
                .collect(),
        )
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

    /// Builds the value in `lua`.
    pub fn to_lua(&self, lua: &Lua) -> mlua::Result<Value> {
        Ok(match self {
            Data::Nil | Data::Other => Value::Nil,
            Data::Bool(b) => Value::Boolean(*b),
            Data::Int(i) => Value::Integer(*i),
            Data::Num(n) => Value::Number(*n),
            Data::Str(s) => Value::String(lua.create_string(s)?),
            Data::Table(pairs) => {
                let t = lua.create_table_with_capacity(0, pairs.len())?;
                for (k, v) in pairs {
                    t.raw_set(k.to_lua(lua)?, v.to_lua(lua)?)?;
                }
                Value::Table(t)
            }
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
