//! The changes a plugin may answer a hook with (VerneMQ's modifiers, `specs/webhooks.md` 4
//! and `specs/lua.md` 3.4), checked as VerneMQ checks them: an unknown, disallowed or mistyped
//! modifier makes the whole answer an error, so an auth hook refuses rather than lets a client
//! in unchanged. Written against the JSON shape webhooks answer with; Lua's tables are brought
//! to that shape first.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::hooks::{
    DeliverModifiers, PublishModifiers, RegisterModifiers, SubscribeTopic, TopicVerdict,
};
use crate::mqtt::{Properties, QoS, ReasonCode, SubAckReason, SubOptions};
use crate::topic;

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} must be an object, got {v}"))
}

fn check_keys(m: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "modifier {k:?} is not allowed for {what} (allowed: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn string(v: &Value, key: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("modifier {key:?} must be a string, got {v}"))
}

fn boolean(v: &Value, key: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("modifier {key:?} must be true or false, got {v}"))
}

/// An integer; floats are rounded, as VerneMQ's `val_int` does.
fn int(v: &Value, key: &str) -> Result<i64, String> {
    v.as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.round() as i64)
        })
        .ok_or_else(|| format!("modifier {key:?} must be a number, got {v}"))
}

fn uint<T: TryFrom<i64>>(v: &Value, key: &str) -> Result<T, String> {
    let n = int(v, key)?;
    T::try_from(n).map_err(|_| format!("modifier {key:?} is out of range: {n}"))
}

fn qos(v: &Value, key: &str) -> Result<QoS, String> {
    match int(v, key)? {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        n => Err(format!("modifier {key:?} must be 0, 1 or 2, got {n}")),
    }
}

fn b64(s: &str, key: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("modifier {key:?} is not base64: {e}"))
}

/// A payload modifier: base64 when the webhook's base64 option is on.
fn payload(v: &Value, base64: bool) -> Result<Bytes, String> {
    let s = string(v, "payload")?;
    Ok(if base64 {
        b64(&s, "payload")?.into()
    } else {
        s.into_bytes().into()
    })
}

fn publish_topic(v: &Value) -> Result<String, String> {
    let t = string(v, "topic")?;
    topic::validate_name(&t).map_err(|e| format!("modifier \"topic\" {t:?} is not valid: {e}"))?;
    Ok(t)
}

/// A v5 `properties` modifier with VerneMQ's names; only `allowed` ones.
pub fn properties(v: &Value, allowed: &[&str]) -> Result<Properties, String> {
    let m = object(v, "properties")?;
    check_keys(m, allowed, "properties")?;
    let mut p = Properties::default();
    for (k, v) in m {
        match k.as_str() {
            "p_user_property" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| format!("p_user_property must be a list, got {v}"))?;
                for pair in list {
                    // The first member is the key and the second the value, whatever their
                    // names; both base64, as VerneMQ reads them.
                    let o = object(pair, "a p_user_property entry")?;
                    let mut it = o.values();
                    let (Some(key), Some(val), None) = (it.next(), it.next(), it.next()) else {
                        return Err(format!("p_user_property entries have two members: {pair}"));
                    };
                    let text = |x: &Value| -> Result<String, String> {
                        String::from_utf8(b64(&string(x, "p_user_property")?, "p_user_property")?)
                            .map_err(|_| "p_user_property is not UTF-8 once decoded".to_owned())
                    };
                    p.user_properties.push((text(key)?, text(val)?));
                }
            }
            "p_message_expiry_interval" => p.message_expiry_interval = Some(uint(v, k)?),
            "p_session_expiry_interval" => p.session_expiry_interval = Some(uint(v, k)?),
            "p_will_delay_interval" => p.will_delay_interval = Some(uint(v, k)?),
            "p_content_type" => p.content_type = Some(string(v, k)?),
            "p_response_topic" => p.response_topic = Some(publish_topic(v)?),
            "p_correlation_data" => p.correlation_data = Some(string(v, k)?.into_bytes().into()),
            "p_payload_format_indicator" => {
                p.payload_format_indicator = Some(match v.as_str() {
                    Some("utf8") => 1,
                    Some("undefined" | "unspecified") => 0,
                    _ => {
                        return Err(format!(
                            "p_payload_format_indicator: utf8 or undefined, got {v}"
                        ));
                    }
                })
            }
            _ => unreachable!("checked against the allowed list"),
        }
    }
    Ok(p)
}

/// `auth_on_register(_m5)` modifiers (`specs/webhooks.md` 4.1).
pub fn register(v: &Value, v5: bool) -> Result<RegisterModifiers, String> {
    let m = object(v, "modifiers")?;
    if m.contains_key("mountpoint") != m.contains_key("client_id") {
        return Err("modifiers \"mountpoint\" and \"client_id\" must be given together".into());
    }
    let mut m = m.clone();
    if v5 && let Some(p) = m.remove("properties") {
        // Checked as VerneMQ checks them; the session expiry and user properties of a
        // CONNECT are not rewritten here (see the webhooks docs).
        properties(&p, &["p_user_property", "p_session_expiry_interval"])?;
    }
    for (k, val) in m.iter_mut() {
        if let Some(f) = val.as_f64().filter(|_| !val.is_i64() && !val.is_u64()) {
            *val = Value::from(f.round() as i64);
        }
        match (k.as_str(), val.as_str()) {
            ("shared_subscription_policy", Some(p))
                if !matches!(
                    p,
                    "prefer_local" | "local_only" | "random" | "prefer_online_before_local"
                ) =>
            {
                return Err(format!("unknown shared_subscription_policy {p:?}"));
            }
            ("queue_type", Some(q)) if !matches!(q, "fifo" | "lifo") => {
                return Err(format!("unknown queue_type {q:?}"));
            }
            _ => {}
        }
    }
    serde_json::from_value(Value::Object(m)).map_err(|e| format!("bad modifiers: {e}"))
}

/// `auth_on_publish(_m5)` modifiers (4.2).
pub fn publish(v: &Value, v5: bool, base64: bool) -> Result<PublishModifiers, String> {
    let m = object(v, "modifiers")?;
    let allowed: &[&str] = if v5 {
        &[
            "topic",
            "payload",
            "qos",
            "retain",
            "mountpoint",
            "throttle",
            "properties",
        ]
    } else {
        &[
            "topic",
            "payload",
            "qos",
            "retain",
            "mountpoint",
            "throttle",
        ]
    };
    check_keys(m, allowed, "auth_on_publish")?;
    let mut out = PublishModifiers::default();
    for (k, v) in m {
        match k.as_str() {
            "topic" => out.topic = Some(publish_topic(v)?),
            "payload" => out.payload = Some(payload(v, base64)?),
            "qos" => out.qos = Some(qos(v, k)?),
            "retain" => out.retain = Some(boolean(v, k)?),
            "mountpoint" => out.mountpoint = Some(string(v, k)?),
            "throttle" => out.throttle = Some(std::time::Duration::from_millis(uint::<u64>(v, k)?)),
            "properties" => {
                out.properties = Some(Box::new(properties(
                    v,
                    &[
                        "p_user_property",
                        "p_message_expiry_interval",
                        "p_content_type",
                        "p_payload_format_indicator",
                        "p_response_topic",
                        "p_correlation_data",
                        "p_will_delay_interval",
                    ],
                )?))
            }
            _ => unreachable!("checked against the allowed list"),
        }
    }
    Ok(out)
}

/// `on_deliver(_m5)` modifiers (4.3).
pub fn deliver(v: &Value, v5: bool, base64: bool) -> Result<DeliverModifiers, String> {
    let m = object(v, "modifiers")?;
    let allowed: &[&str] = if v5 {
        &["topic", "payload", "properties"]
    } else {
        &["topic", "payload"]
    };
    check_keys(m, allowed, "on_deliver")?;
    let mut out = DeliverModifiers::default();
    for (k, v) in m {
        match k.as_str() {
            "topic" => out.topic = Some(publish_topic(v)?),
            "payload" => out.payload = Some(payload(v, base64)?),
            "properties" => {
                out.properties = Some(properties(
                    v,
                    &[
                        "p_content_type",
                        "p_payload_format_indicator",
                        "p_user_property",
                        "p_response_topic",
                        "p_correlation_data",
                    ],
                )?)
            }
            _ => unreachable!("checked against the allowed list"),
        }
    }
    Ok(out)
}

/// The `topics` of an `auth_on_subscribe(_m5)` answer: one entry per asked topic, in order
/// (3.5, 3.6). A QoS of 0..2 grants (maybe rewritten), anything else refuses that topic.
pub fn subscribe(
    v: &Value,
    v5: bool,
    asked: &[SubscribeTopic],
) -> Result<Vec<TopicVerdict>, String> {
    let topics = if v5 {
        let m = object(v, "modifiers")?;
        check_keys(m, &["topics"], "auth_on_subscribe_m5")?;
        match m.get("topics") {
            Some(t) => t,
            None => return Ok(allow_all(asked)),
        }
    } else {
        v
    };
    let list = topics
        .as_array()
        .ok_or_else(|| format!("\"topics\" must be a list, got {topics}"))?;
    if list.len() != asked.len() {
        return Err(format!(
            "\"topics\" has {} entries for {} asked",
            list.len(),
            asked.len()
        ));
    }
    list.iter()
        .zip(asked)
        .map(|(entry, asked)| {
            let e = object(entry, "a topics entry")?;
            let filter = string(
                e.get("topic").ok_or("a topics entry without \"topic\"")?,
                "topic",
            )?;
            let code = int(e.get("qos").ok_or("a topics entry without \"qos\"")?, "qos")?;
            if !(0..=2).contains(&code) {
                // 128 and 135 are "not authorized"; other v5 codes are kept when SUBACK has
                // them.
                let reason = u8::try_from(code)
                    .ok()
                    .filter(|c| v5 && *c != 0x80)
                    .and_then(SubAckReason::from_code)
                    .filter(|r| {
                        !matches!(
                            r,
                            SubAckReason::GrantedQos0
                                | SubAckReason::GrantedQos1
                                | SubAckReason::GrantedQos2
                        )
                    })
                    .unwrap_or(SubAckReason::NotAuthorized);
                return Ok(TopicVerdict::Refuse(reason));
            }
            topic::parse_filter(&filter)
                .map_err(|e| format!("rewritten filter {filter:?} is not valid: {e}"))?;
            let mut options = SubOptions {
                qos: qos(&Value::from(code), "qos")?,
                ..asked.options
            };
            if v5 {
                options.no_local = e
                    .get("no_local")
                    .map(|b| boolean(b, "no_local"))
                    .transpose()?
                    .unwrap_or(false);
                options.retain_as_published = e
                    .get("rap")
                    .map(|b| boolean(b, "rap"))
                    .transpose()?
                    .unwrap_or(false);
                options.retain_handling = match e.get("retain_handling").and_then(Value::as_str) {
                    None | Some("send_retain") => 0,
                    Some("send_if_new_sub") => 1,
                    Some("dont_send") => 2,
                    Some(other) => return Err(format!("unknown retain_handling {other:?}")),
                };
            }
            Ok(TopicVerdict::Allow {
                filter,
                options,
                acl: None,
            })
        })
        .collect()
}

/// Every asked topic allowed as asked.
pub fn allow_all(asked: &[SubscribeTopic]) -> Vec<TopicVerdict> {
    asked
        .iter()
        .map(|t| TopicVerdict::Allow {
            filter: t.filter.clone(),
            options: t.options,
            acl: None,
        })
        .collect()
}

/// The `topics` of an `on_unsubscribe(_m5)` answer: the filters to unsubscribe instead.
pub fn unsubscribe(v: &Value, v5: bool) -> Result<Option<Vec<String>>, String> {
    let topics = if v5 {
        let m = object(v, "modifiers")?;
        check_keys(m, &["topics"], "on_unsubscribe_m5")?;
        match m.get("topics") {
            Some(t) => t,
            None => return Ok(None),
        }
    } else {
        v
    };
    let list = topics
        .as_array()
        .ok_or_else(|| format!("\"topics\" must be a list, got {topics}"))?;
    list.iter()
        .map(|t| {
            let f = string(t, "topics")?;
            topic::parse_filter(&f).map_err(|e| format!("filter {f:?} is not valid: {e}"))?;
            Ok(f)
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn register_modifiers_as_vernemq_checks_them() {
        let m = register(
            &json!({"max_message_size":65535,"max_inflight_messages":10000,"retry_interval":20000}),
            false,
        )
        .unwrap();
        assert_eq!(m.max_message_size, Some(65535));
        assert_eq!(m.retry_interval, Some(20000));
        let m = register(
            &json!({"mountpoint":"mynewmount","client_id":"changed"}),
            false,
        )
        .unwrap();
        assert_eq!(m.mountpoint.as_deref(), Some("mynewmount"));
        assert!(register(&json!({"mountpoint":"x"}), false).is_err());
        assert!(register(&json!({"reg_view":"x"}), false).is_err());
        assert!(register(&json!({"clean_start":true}), true).is_err());
        assert!(register(&json!({"queue_type":"random"}), false).is_err());
        // Floats are rounded.
        assert_eq!(
            register(&json!({"max_inflight_messages":9.6}), false)
                .unwrap()
                .max_inflight_messages,
            Some(10)
        );
        assert!(register(&json!({"properties":{"p_session_expiry_interval":5}}), true).is_ok());
        assert!(register(&json!({"properties":{"p_content_type":"x"}}), true).is_err());
        assert!(register(&json!({"properties":{}}), false).is_err());
    }

    #[test]
    fn publish_and_deliver_modifiers() {
        let m = publish(
            &json!({"topic":"rewritten/topic","qos":2,"payload":"cmV3cml0dGVu","retain":true}),
            false,
            true,
        )
        .unwrap();
        assert_eq!(m.topic.as_deref(), Some("rewritten/topic"));
        assert_eq!(m.payload.as_deref(), Some(&b"rewritten"[..]));
        assert_eq!(m.qos, Some(QoS::ExactlyOnce));
        assert_eq!(m.retain, Some(true));
        let raw = publish(&json!({"payload":"rewritten payload"}), false, false).unwrap();
        assert_eq!(raw.payload.as_deref(), Some(&b"rewritten payload"[..]));
        assert!(publish(&json!({"topic":"a/+"}), false, true).is_err());
        assert!(publish(&json!({"qos":3}), false, true).is_err());
        assert!(publish(&json!({"properties":{}}), false, true).is_err());
        let p = publish(
            &json!({"properties":{"p_user_property":[{"k":"azE=","v":"djE="}],
                                  "p_content_type":"text/plain"}}),
            true,
            true,
        )
        .unwrap()
        .properties
        .unwrap();
        assert_eq!(p.user_properties, vec![("k1".into(), "v1".into())]);
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert!(deliver(&json!({"qos":1}), false, true).is_err());
        assert!(deliver(&json!({"topic":"x/y"}), false, true).is_ok());
    }

    #[test]
    fn subscribe_topics_per_entry() {
        let asked = vec![
            SubscribeTopic {
                filter: "a/b".into(),
                options: SubOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            },
            SubscribeTopic {
                filter: "c/d".into(),
                options: SubOptions::default(),
            },
        ];
        let v = subscribe(
            &json!([{"topic":"rewritten/topic","qos":0},{"topic":"forbidden/topic","qos":128}]),
            false,
            &asked,
        )
        .unwrap();
        assert!(matches!(&v[0], TopicVerdict::Allow { filter, options, .. }
            if filter == "rewritten/topic" && options.qos == QoS::AtMostOnce));
        assert_eq!(v[1], TopicVerdict::Refuse(SubAckReason::NotAuthorized));
        let v5 = subscribe(
            &json!({"topics":[{"topic":"x","qos":2,"no_local":true},{"topic":"y","qos":135}]}),
            true,
            &asked,
        )
        .unwrap();
        assert!(matches!(&v5[0], TopicVerdict::Allow { options, .. } if options.no_local));
        assert_eq!(v5[1], TopicVerdict::Refuse(SubAckReason::NotAuthorized));
        assert!(subscribe(&json!([{"topic":"x","qos":0}]), false, &asked).is_err());
        assert!(subscribe(&json!({"qos":1}), true, &asked).is_err());
    }

    #[test]
    fn unsubscribe_topics() {
        assert_eq!(
            unsubscribe(&json!(["rewritten/topic"]), false).unwrap(),
            Some(vec!["rewritten/topic".to_owned()])
        );
        assert_eq!(
            unsubscribe(&json!({"topics":["a/#"]}), true).unwrap(),
            Some(vec!["a/#".to_owned()])
        );
        assert!(unsubscribe(&json!({"topic":["a"]}), true).is_err());
    }
}
