//! Admin commands as the host routes them: `vmq-admin <words> key=value ...`, which is also
//! `GET /api/v1/<words>?key=value`. The broker's own commands and each plugin's share these
//! types, so a plugin answers its words without knowing HTTP.

use serde_json::{Map, Value, json};

/// A command's answer.
#[derive(Debug)]
pub enum Answer {
    /// Rows of named columns.
    Table(Vec<Map<String, Value>>),
    /// A message.
    Text(String),
}

impl Answer {
    /// VerneMQ's JSON shape.
    pub fn to_json(&self) -> Value {
        match self {
            Answer::Table(rows) => json!({"table": rows, "type": "table"}),
            Answer::Text(t) => json!({"text": t, "type": "text"}),
        }
    }
}

/// Why a command failed: a bad request (400) or an unknown command (404), with a message.
#[derive(Debug)]
pub struct CommandError {
    /// HTTP status.
    pub status: u16,
    /// What is wrong.
    pub text: String,
}

impl CommandError {
    /// The request is wrong (400).
    pub fn bad(text: impl Into<String>) -> CommandError {
        CommandError {
            status: 400,
            text: text.into(),
        }
    }

    /// No such command or object (404).
    pub fn not_found(text: impl Into<String>) -> CommandError {
        CommandError {
            status: 404,
            text: text.into(),
        }
    }
}

/// A command's arguments; every one must be used, so a misspelt one is an error.
#[derive(Debug)]
pub struct Args {
    params: Vec<(String, String)>,
}

impl Args {
    /// The query's parameters, in order.
    pub fn new(params: Vec<(String, String)>) -> Args {
        Args { params }
    }

    /// Every parameter, in order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Refuses any argument not in `allowed`.
    pub fn check(&self, allowed: &[&str]) -> Result<(), CommandError> {
        for (k, _) in &self.params {
            if !allowed.contains(&k.as_str()) {
                return Err(CommandError::bad(format!(
                    "unknown argument {k:?} (expected: {})",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, which must be given and not empty.
    pub fn need(&self, key: &str) -> Result<&str, CommandError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CommandError::bad(format!("missing argument {key}=<value>")))
    }
}

/// A table row from (column, value) pairs.
pub fn row(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A text answer.
pub fn text(t: impl Into<String>) -> Result<Answer, CommandError> {
    Ok(Answer::Text(t.into()))
}
