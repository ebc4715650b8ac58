//! What a script's answer means (`specs/lua.md` 3.1, 3.4): `true`, `false`, a table of
//! modifiers, or anything else for "next"; and Lua's modifier tables brought to the JSON shape
//! the checks shared with webhooks read (`crate::plugins::modifiers`).

use serde_json::{Value, json};

use super::data::Data;

/// What a script's answer to a conditional hook means (`specs/lua.md` 3.1).
pub enum Ret {
    /// `true`.
    Ok,
    /// A table of modifiers.
    Changes(Data),
    /// `false`.
    Refused,
    /// `nil` or anything else: the next script.
    Next,
}

pub fn ret(d: Data) -> Ret {
    match d {
        Data::Bool(true) => Ret::Ok,
        Data::Bool(false) => Ret::Refused,
        Data::Table(_) => Ret::Changes(d),
        _ => Ret::Next,
    }
}

/// Lua's modifier table in the JSON shape the shared checks read: `subscriber_id` flattened,
/// user properties from `{{k = v}, ...}` to webhooks' base64 `key`/`val` objects.
pub fn modifiers_json(d: &Data) -> Result<Value, String> {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut j = d
        .to_json()
        .ok_or("the returned table cannot be read as modifiers")?;
    let Some(o) = j.as_object_mut() else {
        return Err("expected a table of modifiers".into());
    };
    if let Some(Value::Object(id)) = o.remove("subscriber_id") {
        for (k, v) in id {
            o.insert(k, v);
        }
    }
    if let (Some(Value::Object(p)), Some(props)) = (o.get_mut("properties"), d.field("properties"))
        && let Some(up) = props.field("p_user_property")
    {
        let pairs: Vec<Value> = up
            .items()
            .into_iter()
            .filter_map(|pair| match pair {
                Data::Table(kv) if kv.len() == 1 => match &kv[0] {
                    (Data::Str(k), Data::Str(v)) => Some(json!({"key": b64(k), "val": b64(v)})),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        p.insert("p_user_property".into(), Value::Array(pairs));
    }
    Ok(j)
}

/// `{{topic, qos}, ...}` (v3) or `{topics = {{topic, {qos, {opts}}}, ...}}` (v5) in the JSON
/// shape the subscribe check reads.
pub fn subscribe_json(d: &Data, v5: bool) -> Value {
    let list = if v5 {
        d.field("topics").map(Data::items).unwrap_or_default()
    } else {
        d.items()
    };
    let topics: Vec<Value> = list
        .into_iter()
        .map(|entry| {
            let parts = entry.items();
            let topic = parts.first().and_then(|t| t.as_str()).unwrap_or_default();
            let mut o = json!({"topic": topic});
            match parts.get(1) {
                Some(Data::Table(_)) if v5 => {
                    let inner = parts[1].items();
                    o["qos"] = inner
                        .first()
                        .and_then(|q| q.to_json())
                        .unwrap_or(Value::Null);
                    if let Some(opts) = inner.get(1)
                        && let Some(Value::Object(m)) = opts.to_json()
                    {
                        for (k, v) in m {
                            o[k] = v;
                        }
                    }
                }
                Some(q) => o["qos"] = q.to_json().unwrap_or(Value::Null),
                None => {}
            }
            o
        })
        .collect();
    if v5 {
        json!({"topics": topics})
    } else {
        Value::Array(topics)
    }
}
