//! `vmq_passwd`: clients authenticate with a username and password from a password file in
//! VerneMQ's format, one `user:$6$<salt>$<hash>` line per user, where the salt is 12 random
//! bytes and the hash SHA-512 of the password followed by the salt, both in base64. Files made
//! by VerneMQ's `vmq-passwd` work here and ours work there. `vmq-passwd` (a binary of this
//! crate) creates and edits them.
//!
//! Unknown users and clients without credentials get `next` (another plugin decides, or
//! nobody and the client is refused); a wrong password is refused (bad username or
//! password). With `allow_anonymous = on` no password is checked at all, as in VerneMQ.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use futures::future::BoxFuture;
use sha2::{Digest, Sha512};

use super::reload::Watched;
use crate::hooks::{AuthResult, Hook, Plugin, RegisterModifiers, RegisterRequest};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Salt length, as VerneMQ.
pub const SALT_LEN: usize = 12;

/// base64(SHA-512(password ‖ salt)).
pub fn hash(password: &[u8], salt: &[u8]) -> String {
    let mut h = Sha512::new();
    h.update(password);
    h.update(salt);
    B64.encode(h.finalize())
}

/// A password file line for `user` with a fresh random salt.
pub fn entry(user: &str, password: &str) -> String {
    let salt: Vec<u8> = uuid::Uuid::new_v4().as_bytes()[..SALT_LEN].to_vec();
    format!(
        "{user}:$6${}${}",
        B64.encode(&salt),
        hash(password.as_bytes(), &salt)
    )
}

/// One user's salt and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credential {
    salt: Vec<u8>,
    hash: String,
}

/// Parses a password file; an error names the line.
fn parse(text: &str, path: &Path) -> Result<HashMap<String, Credential>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("{}:{}: {why}", path.display(), i + 1);
        let (user, rest) = line
            .split_once(':')
            .ok_or_else(|| bad("expected user:$6$salt$hash"))?;
        let mut parts = rest.split('$');
        let (Some(""), Some("6"), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("expected user:$6$salt$hash"));
        };
        if user.is_empty() {
            return Err(bad("empty user name"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| bad("the salt is not base64"))?;
        users.insert(
            user.to_owned(),
            Credential {
                salt,
                hash: hash.trim().to_owned(),
            },
        );
    }
    Ok(users)
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The plugin.
#[derive(Debug)]
pub struct Passwd {
    users: Arc<Watched<HashMap<String, Credential>>>,
    priority: i32,
}

impl Passwd {
    /// Loads `path` (it must exist and parse; create it with `vmq-passwd -c`) and re-reads it
    /// when it changes.
    pub fn start(
        path: &Path,
        reload: std::time::Duration,
        priority: i32,
    ) -> Result<Arc<Passwd>, String> {
        let users = Watched::start("vmq_passwd.password_file", path, reload, parse)?;
        Ok(Arc::new(Passwd { users, priority }))
    }

    /// `Some(true)`: the password is right; `Some(false)`: wrong; `None`: unknown user.
    pub fn check(&self, user: &str, password: &[u8]) -> Option<bool> {
        let users = self.users.get()?;
        let c = users.get(user)?;
        Some(same(hash(password, &c.salt).as_bytes(), c.hash.as_bytes()))
    }
}

super::file_plugin!(
    Passwd,
    "vmq_passwd",
    ("password_file", "password_reload_interval"),
    "./vmq.passwd"
);

impl Plugin for Passwd {
    fn name(&self) -> &str {
        "vmq_passwd"
    }

    fn priority(&self) -> i32 {
        self.priority
    }

    fn wants(&self, hook: Hook) -> bool {
        hook == Hook::AuthOnRegister
    }

    fn auth_on_register<'a>(
        &'a self,
        req: &'a RegisterRequest<'a>,
    ) -> BoxFuture<'a, AuthResult<RegisterModifiers>> {
        let decision = match (&req.client.username, req.password) {
            (Some(user), Some(password)) => match self.check(user, password) {
                Some(true) => AuthResult::Ok(None),
                Some(false) => AuthResult::refused_because(crate::hooks::INVALID_CREDENTIALS),
                None => AuthResult::Next,
            },
            _ => AuthResult::Next,
        };
        Box::pin(async move { decision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plugin on a file holding `text` (not watched).
    fn plugin(text: &str) -> Arc<Passwd> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        Passwd::start(file.path(), std::time::Duration::ZERO, 0).unwrap()
    }

    #[test]
    fn entries_check_and_bad_lines_name_the_line() {
        let text = format!(
            "{}\n# comment\n\n{}\n",
            entry("alice", "secret"),
            entry("bob", "pw")
        );
        let p = plugin(&text);
        assert_eq!(p.check("alice", b"secret"), Some(true));
        assert_eq!(p.check("alice", b"wrong"), Some(false));
        assert_eq!(p.check("carol", b"x"), None);
        let e = parse("alice:$6$notbase64!$x\n", Path::new("p")).unwrap_err();
        assert_eq!(e, "p:1: the salt is not base64");
        let e = parse("ok:$6$AAAA$x\nbroken\n", Path::new("p")).unwrap_err();
        assert!(e.starts_with("p:2:"), "{e}");
    }

    #[test]
    fn a_known_vector_computed_independently() {
        // Python: base64(sha512(b"password" + bytes(range(12)))).
        let salt: Vec<u8> = (0u8..12).collect();
        assert_eq!(
            hash(b"password", &salt),
            "b4be9ENqb54sNj+csQTvm3qRtt6r5BJ4pdELhfw3543YRDKXy8YjBxqSsJubpfDSNaXeWIFnCuo6UMHsY83J5w=="
        );
        let line = "u:$6$AAECAwQFBgcICQoL$b4be9ENqb54sNj+csQTvm3qRtt6r5BJ4pdELhfw3543YRDKXy8YjBxqSsJubpfDSNaXeWIFnCuo6UMHsY83J5w==";
        assert_eq!(plugin(line).check("u", b"password"), Some(true));
    }

    #[test]
    fn settings_are_checked_with_their_line() {
        let config = crate::config::Config::parse(
            "listener.tcp.a = 127.0.0.1:1\nvmq_passwd.password_reload_interval= 037w547814851762060w\n",
            "f",
        )
        .unwrap();
        let e = crate::plugins::check(&config).unwrap_err().to_string();
        assert!(e.starts_with("f:2: ") && e.contains("too long"), "{e}");
        let config = crate::config::Config::parse(
            "listener.tcp.a = 127.0.0.1:1\nvmq_passwd.pasword_file = x\n",
            "f",
        )
        .unwrap();
        let e = crate::plugins::check(&config).unwrap_err().to_string();
        assert!(
            e.contains("f:2: unknown key \"vmq_passwd.pasword_file\""),
            "{e}"
        );
    }
}
