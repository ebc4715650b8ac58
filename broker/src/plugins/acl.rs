//! `vmq_acl`: who may publish to and subscribe to what, from an ACL file in VerneMQ's format:
//!
//! ```text
//! # lines before any `user` apply to every client, anonymous ones included
//! topic read public/#
//! user alice
//! topic write sensors/alice/#      # `topic <filter>` alone is read and write
//! # patterns apply to every authenticated client: %u user, %c client id, %m mountpoint
//! pattern write devices/%c/#
//! label telemetry
//! topic telemetry/#                # entries after `label <name>` carry it in events
//! ```
//!
//! A publish or subscribe is allowed when a rule matches: the rules for everyone, then the
//! user's own, then the patterns (not for anonymous clients). Otherwise the plugin answers
//! `next`, and a chain in which nobody allowed refuses: with the plugin on, everything not
//! granted is denied. The `matched_acl` of OnPublish/OnSubscribe events carries the label and
//! the rule as written.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::reload::Watched;
use crate::hooks::{
    AuthResult, ClientInfo, Hook, MatchedAcl, MessageInfo, Plugin, PublishModifiers,
    SubscribeTopic, TopicVerdict,
};
use crate::mqtt::Properties;

/// One rule: a filter (a pattern before substitution) and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    filter: String,
    label: String,
}

/// Rules for one direction.
#[derive(Debug, Default, Clone)]
struct Direction {
    all: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// Every rule of the file.
#[derive(Debug, Default, Clone)]
pub struct Rules {
    read: Direction,
    write: Direction,
}

/// Whether a publish (write) or a subscribe (read) is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe.
    Read,
    /// Publish.
    Write,
}

/// Whether the subscription filter `sub` only matches topics the ACL filter `acl` matches.
fn covers(acl: &str, sub: &str) -> bool {
    let mut a = acl.split('/');
    let mut s = sub.split('/');
    loop {
        match (a.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Replaces the words `%u`, `%c`, `%m`; `None` when `%u` is needed and there is no user.
fn substitute(pattern: &str, client: &ClientInfo) -> Option<String> {
    let mut out = Vec::new();
    for w in pattern.split('/') {
        out.push(match w {
            "%u" => client.username.as_deref()?,
            "%c" => &client.client_id,
            "%m" => &client.mountpoint,
            other => other,
        });
    }
    Some(out.join("/"))
}

impl Rules {
    /// Parses an ACL file; an error names the line.
    pub fn parse(text: &str, path: &Path) -> Result<Rules, String> {
        let mut rules = Rules::default();
        let mut user: Option<String> = None;
        let mut label = String::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| format!("{}:{}: {why}", path.display(), i + 1);
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim();
            match word {
                "user" if !rest.is_empty() => {
                    user = Some(rest.to_owned());
                    label.clear();
                }
                // `label` alone ends the labelled entries.
                "label" => label = rest.to_owned(),
                "topic" | "pattern" => {
                    let (dirs, filter) = match rest.split_once(' ') {
                        Some(("read", f)) => (&[Access::Read][..], f.trim()),
                        Some(("write", f)) => (&[Access::Write][..], f.trim()),
                        _ => (&[Access::Read, Access::Write][..], rest),
                    };
                    let probe = filter
                        .replace("%u", "u")
                        .replace("%c", "c")
                        .replace("%m", "m");
                    if filter.is_empty() || crate::topic::parse_filter(&probe).is_err() {
                        return Err(bad(format!("{filter:?} is not a topic filter")));
                    }
                    let rule = Rule {
                        filter: filter.to_owned(),
                        label: label.clone(),
                    };
                    for d in dirs {
                        let dir = match d {
                            Access::Read => &mut rules.read,
                            Access::Write => &mut rules.write,
                        };
                        if word == "pattern" {
                            dir.patterns.push(rule.clone());
                        } else if let Some(u) = &user {
                            dir.users.entry(u.clone()).or_default().push(rule.clone());
                        } else {
                            dir.all.push(rule.clone());
                        }
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "expected `topic [read|write] <filter>`, `pattern [read|write] <filter>`, \
                         `user <name>` or `label <name>`, got {line:?}"
                    )));
                }
            }
        }
        Ok(rules)
    }

    /// The rule that grants `client` this access to `topic` (a topic name to publish to, or a
    /// filter to subscribe to), if one does.
    pub fn check(&self, access: Access, client: &ClientInfo, topic: &str) -> Option<MatchedAcl> {
        let dir = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        let fits = |filter: &str| match access {
            Access::Write => crate::topic::matches(filter, topic),
            Access::Read => covers(filter, topic),
        };
        let granted = |r: &Rule| MatchedAcl {
            name: r.label.clone(),
            pattern: r.filter.clone(),
        };
        if let Some(r) = dir.all.iter().find(|r| fits(&r.filter)) {
            return Some(granted(r));
        }
        let user = client.username.as_deref()?;
        if let Some(r) = dir
            .users
            .get(user)
            .and_then(|rules| rules.iter().find(|r| fits(&r.filter)))
        {
            return Some(granted(r));
        }
        dir.patterns
            .iter()
            .find(|r| substitute(&r.filter, client).is_some_and(|f| fits(&f)))
            .map(granted)
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Acl {
    rules: Arc<Watched<Rules>>,
    priority: i32,
}

impl Acl {
    /// Loads `path` (it must exist and parse) and re-reads it when it changes.
    pub fn start(
        path: &Path,
        reload: std::time::Duration,
        priority: i32,
    ) -> Result<Arc<Acl>, String> {
        let rules = Watched::start("vmq_acl.acl_file", path, reload, Rules::parse)?;
        Ok(Arc::new(Acl { rules, priority }))
    }

    fn decide<M>(&self, access: Access, client: &ClientInfo, topic: &str) -> AuthResult<M> {
        let rules = self.rules.get().unwrap_or_default();
        match rules.check(access, client, topic) {
            Some(acl) => AuthResult::Ok(Some(acl)),
            None => AuthResult::Next,
        }
    }
}

super::file_plugin!(
    Acl,
    "vmq_acl",
    ("acl_file", "acl_reload_interval"),
    "./vmq.acl"
);

impl Plugin for Acl {
    fn name(&self) -> &str {
        "vmq_acl"
    }

    fn priority(&self) -> i32 {
        self.priority
    }

    fn wants(&self, hook: Hook) -> bool {
        matches!(hook, Hook::AuthOnPublish | Hook::AuthOnSubscribe)
    }

    fn auth_on_publish_now(
        &self,
        client: &ClientInfo,
        message: &MessageInfo<'_>,
    ) -> Option<AuthResult<PublishModifiers>> {
        Some(self.decide(Access::Write, client, message.topic))
    }

    fn auth_on_publish<'a>(
        &'a self,
        client: &'a ClientInfo,
        message: &'a MessageInfo<'a>,
    ) -> BoxFuture<'a, AuthResult<PublishModifiers>> {
        let d = self.decide(Access::Write, client, message.topic);
        Box::pin(async move { d })
    }

    /// Each topic on its own: allowed by its matching rule, or left to the next plugin.
    fn auth_on_subscribe<'a>(
        &'a self,
        client: &'a ClientInfo,
        topics: &'a [SubscribeTopic],
        _properties: &'a Properties,
    ) -> BoxFuture<'a, AuthResult<Vec<TopicVerdict>>> {
        let rules = self.rules.get().unwrap_or_default();
        let verdicts = topics
            .iter()
            .map(|t| match rules.check(Access::Read, client, &t.filter) {
                Some(acl) => TopicVerdict::Allow {
                    filter: t.filter.clone(),
                    options: t.options,
                    acl: Some(acl),
                },
                None => TopicVerdict::Pass,
            })
            .collect();
        Box::pin(async move { AuthResult::OkWith(verdicts, None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::Protocol;

    fn client(user: Option<&str>, id: &str) -> ClientInfo {
        ClientInfo {
            mountpoint: "mp".into(),
            client_id: id.into(),
            username: user.map(Into::into),
            peer: "127.0.0.1:1".parse().unwrap(),
            session_id: "s".into(),
            protocol: Protocol::V311,
        }
    }

    const FILE: &str = "topic read public/#\n# everyone may read public\nuser alice\n\
                        topic write sensors/alice/#\nlabel telemetry\ntopic telemetry/+/data\n\
                        user bob\ntopic bob/+\npattern write devices/%c/#\npattern read %m/%u/in\n";

    #[test]
    fn everyone_users_and_patterns() {
        let r = Rules::parse(FILE, Path::new("acl")).unwrap();
        let anon = client(None, "c0");
        let alice = client(Some("alice"), "dev1");
        let bob = client(Some("bob"), "dev2");
        assert!(r.check(Access::Read, &anon, "public/x/#").is_some());
        assert!(
            r.check(Access::Write, &anon, "public/x").is_none(),
            "read only"
        );
        assert!(r.check(Access::Write, &alice, "sensors/alice/t").is_some());
        assert!(r.check(Access::Write, &bob, "sensors/alice/t").is_none());
        let acl = r.check(Access::Read, &alice, "telemetry/a/data").unwrap();
        assert_eq!(
            (acl.name.as_str(), acl.pattern.as_str()),
            ("telemetry", "telemetry/+/data")
        );
        assert!(
            r.check(Access::Read, &alice, "telemetry/#").is_none(),
            "wider than granted"
        );
        assert!(
            r.check(Access::Write, &bob, "bob/x").is_some()
                && r.check(Access::Read, &bob, "bob/+").is_some()
        );
        let p = r.check(Access::Write, &alice, "devices/dev1/temp").unwrap();
        assert_eq!((p.name.as_str(), p.pattern.as_str()), ("", "devices/%c/#"));
        assert!(
            r.check(Access::Write, &alice, "devices/dev2/temp")
                .is_none()
        );
        assert!(r.check(Access::Read, &bob, "mp/bob/in").is_some());
        assert!(
            r.check(Access::Write, &anon, "devices/c0/x").is_none(),
            "no patterns for anonymous"
        );
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = Rules::parse("user a\ntopic read a/#/b\n", Path::new("acl")).unwrap_err();
        assert!(e.starts_with("acl:2:"), "{e}");
        let e = Rules::parse("topics a\n", Path::new("acl")).unwrap_err();
        assert!(e.starts_with("acl:1: expected"), "{e}");
    }

    #[test]
    fn coverage_of_subscription_filters() {
        assert!(covers("a/#", "a/b/+"));
        assert!(covers("a/+/c", "a/b/c"));
        assert!(!covers("a/+/c", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(covers("#", "#"));
    }
}
