//! One `key = value` setting and where it came from (a file's line or an environment
//! variable), and how problems with several of them are reported together.

use super::ConfigError;

/// Where a setting came from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin<'a> {
    /// A line of a file.
    File(&'a str, usize),
    /// An environment variable.
    Env(&'a str),
}

impl Origin<'_> {
    pub(super) fn error(self, message: String) -> ConfigError {
        match self {
            Origin::File(file, line) => ConfigError::Line {
                file: file.to_owned(),
                line,
                message,
            },
            Origin::Env(var) => ConfigError::Invalid(format!("environment {var}: {message}")),
        }
    }

    /// The file and line (an environment variable is line 0 of `environment <NAME>`).
    pub(super) fn file_line(self) -> (String, usize) {
        match self {
            Origin::File(f, l) => (f.to_owned(), l),
            Origin::Env(var) => (format!("environment {var}"), 0),
        }
    }
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(file, line) => write!(f, "{file}:{line}"),
            Origin::Env(var) => write!(f, "environment {var}"),
        }
    }
}

/// One `key = value` setting.
pub(super) struct Line<'a> {
    pub(super) origin: Origin<'a>,
    pub(super) key: &'a str,
    pub(super) value: &'a str,
}

impl<'a> Line<'a> {
    /// A file line's setting; `None` for blank lines and comments.
    pub(super) fn split(
        file: &'a str,
        line: usize,
        raw: &'a str,
    ) -> Result<Option<Line<'a>>, ConfigError> {
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            return Ok(None);
        }
        let origin = Origin::File(file, line);
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| origin.error(format!("expected `key = value`, got {text:?}")))?;
        Ok(Some(Line {
            origin,
            key: key.trim(),
            value: value.trim(),
        }))
    }
}

pub(super) fn many(mut problems: Vec<ConfigError>) -> ConfigError {
    if problems.len() == 1 {
        problems.remove(0)
    } else {
        ConfigError::Many(problems)
    }
}

pub(super) fn clone_error(e: &ConfigError) -> ConfigError {
    match e {
        ConfigError::Line {
            file,
            line,
            message,
        } => ConfigError::Line {
            file: file.clone(),
            line: *line,
            message: message.clone(),
        },
        other => ConfigError::Invalid(other.to_string()),
    }
}
