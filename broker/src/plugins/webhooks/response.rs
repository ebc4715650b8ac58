//! Reading a webhook's answer (`specs/webhooks.md` 2.1): the verdict. The changes an `ok`
//! carries are checked by [`crate::plugins::modifiers`], as VerneMQ checks them for every
//! plugin.

use serde_json::Value;

/// What an answer says, before its modifiers are read.
#[derive(Debug, PartialEq)]
pub enum Verdict<'a> {
    /// `{"result": "ok"}`, with the changes (`modifiers`, or the top-level `topics` of v3
    /// `auth_on_subscribe` and `on_unsubscribe`) if any.
    Ok(Option<&'a Value>),
    /// `{"result": "next"}`.
    Next,
    /// `{"result": {"error": "..."}}`, or an answer that is none of these.
    Error(String),
}

/// Reads `result`; `changes` is where this hook's changes are (`modifiers` or `topics`).
pub fn verdict<'a>(body: &'a Value, changes: &str) -> Verdict<'a> {
    match body.get("result") {
        Some(Value::String(s)) if s == "ok" => Verdict::Ok(body.get(changes)),
        Some(Value::String(s)) if s == "next" => Verdict::Next,
        Some(Value::Object(o)) => Verdict::Error(match o.get("error") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "unknown_error".into(),
        }),
        // VerneMQ crashes the session on these; here they are a plain error.
        Some(other) => Verdict::Error(format!("unexpected result {other}")),
        None => Verdict::Error("answer without \"result\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(&json!({"result":"ok"}), "modifiers"),
            Verdict::Ok(None)
        );
        assert_eq!(
            verdict(&json!({"result":"next"}), "modifiers"),
            Verdict::Next
        );
        assert_eq!(
            verdict(&json!({"result":{"error":"not_allowed"}}), "modifiers"),
            Verdict::Error("not_allowed".into())
        );
        assert_eq!(
            verdict(&json!({"result":{}}), "modifiers"),
            Verdict::Error("unknown_error".into())
        );
        assert!(matches!(
            verdict(&json!({"result":7}), "modifiers"),
            Verdict::Error(_)
        ));
        assert!(matches!(
            verdict(&json!({}), "modifiers"),
            Verdict::Error(_)
        ));
        let with = json!({"result":"ok","topics":[]});
        assert_eq!(verdict(&with, "topics"), Verdict::Ok(Some(&json!([]))));
    }
}
