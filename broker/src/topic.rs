//! Topic names and filters: validation and matching, as MQTT defines them.

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty.
    #[error("empty topic")]
    Empty,
    /// A wildcard in a topic name.
    #[error("wildcard in topic name {0:?}")]
    WildcardInName(String),
    /// `#` not alone in the last level, or `+` not alone in its level.
    #[error("invalid wildcard in filter {0:?}")]
    BadWildcard(String),
    /// `$share/<group>/<filter>` with an empty or wildcard group, or no filter.
    #[error("invalid shared subscription {0:?}")]
    BadShare(String),
}

/// Checks a PUBLISH topic name.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName(topic.to_owned()));
    }
    Ok(())
}

/// Checks a SUBSCRIBE topic filter (without any `$share/` prefix).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let bad_hash = level.contains('#') && (*level != "#" || i != levels.len() - 1);
        let bad_plus = level.contains('+') && *level != "+";
        if bad_hash || bad_plus {
            return Err(TopicError::BadWildcard(filter.to_owned()));
        }
    }
    Ok(())
}

/// A subscription filter as the router sees it: plain, or shared by a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter<'a> {
    /// The share group, for `$share/<group>/<filter>`.
    pub group: Option<&'a str>,
    /// The filter proper.
    pub filter: &'a str,
}

/// Splits off a `$share/<group>/` prefix and validates the rest.
pub fn parse_filter(raw: &str) -> Result<Filter<'_>, TopicError> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let (group, filter) = rest
            .split_once('/')
            .ok_or_else(|| TopicError::BadShare(raw.to_owned()))?;
        if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
            return Err(TopicError::BadShare(raw.to_owned()));
        }
        validate_filter(filter)?;
        return Ok(Filter {
            group: Some(group),
            filter,
        });
    }
    validate_filter(raw)?;
    Ok(Filter {
        group: None,
        filter: raw,
    })
}

/// Whether `filter` matches `topic`. A filter starting with a wildcard does not match a topic
/// starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Topic names and filters for property tests: few levels and level names (with a `$` one and
/// an empty one), so that matches are common.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("$sys".to_owned()),
            Just(String::new()),
        ]
    }

    /// A topic name of 1 to 4 levels.
    pub fn topic_name() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    /// A valid filter of 1 to 4 levels, with `+` and `#`.
    pub fn filter() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![level(), Just("+".to_owned()), Just("#".to_owned())],
            1..5,
        )
        .prop_map(|l| l.join("/"))
        .prop_filter("valid filter", |f| super::validate_filter(f).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_validation() {
        for ok in [
            "a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/", "a//b", "$SYS/#",
        ] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a/b+", "#/a", "a/+b"] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
        assert!(validate_name("a/+").is_err());
        assert!(validate_name("").is_err());
        assert_eq!(
            parse_filter("$share/g/a/+").unwrap(),
            Filter {
                group: Some("g"),
                filter: "a/+"
            }
        );
        assert!(parse_filter("$share/g").is_err());
        assert!(parse_filter("$share//a").is_err());
    }

    #[test]
    fn matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/a", true),
            ("+", "", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/c", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} {t}");
        }
    }
}
