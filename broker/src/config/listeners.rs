//! Listener settings: `listener.tcp|ssl|ws|wss.<name> = ip:port` with their per-listener
//! settings (mountpoint, limits, TLS files), the same settings for every listener of a transport
//! (`listener.ssl.cafile = ...`, as VerneMQ reads them), and `listener.http.<name>`. Settings may
//! come in any order; the listeners are checked once the whole file is read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::ConfigError;
use super::values::{parse_flag, parse_limit};

/// How an MQTT listener carries MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    /// Plain TCP (`listener.tcp.<name>`).
    Tcp,
    /// TLS (`listener.ssl.<name>`, mqtts).
    Ssl,
    /// WebSocket (`listener.ws.<name>`, subprotocol `mqtt`, path `/mqtt`).
    Ws,
    /// WebSocket over TLS (`listener.wss.<name>`).
    Wss,
}

impl Transport {
    /// The word in its config keys.
    pub fn key(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ssl => "ssl",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Whether it runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Ssl | Transport::Wss)
    }
}

/// TLS settings of an `ssl` or `wss` listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub certfile: Option<PathBuf>,
    /// PEM private key.
    pub keyfile: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to.
    pub cafile: Option<PathBuf>,
    /// Whether clients must present a certificate signed by `cafile`.
    pub require_certificate: bool,
    /// Whether the client certificate's common name becomes the username.
    pub use_identity_as_username: bool,
}

/// One MQTT listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpListenerConfig {
    /// The name after `listener.<transport>.`.
    pub name: String,
    /// How it carries MQTT.
    pub transport: Transport,
    /// Address to bind.
    pub addr: SocketAddr,
    /// Topics of clients of this listener live under this mountpoint.
    pub mountpoint: String,
    /// Most connections at once (`None`: no limit).
    pub max_connections: Option<usize>,
    /// TLS settings (for `ssl` and `wss`).
    pub tls: TlsConfig,
    /// `allow_anonymous_override`: anonymous clients allowed here whatever `allow_anonymous`.
    pub allow_anonymous_override: bool,
    /// `max_connection_lifetime` (seconds in the file; 0: none).
    pub max_connection_lifetime: Option<std::time::Duration>,
}

/// A listener as it is being read from the file (or a transport's defaults): what was set.
#[derive(Debug, Default)]
struct PartialListener {
    addr: Option<SocketAddr>,
    mountpoint: Option<String>,
    max_connections: Option<Option<usize>>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    cafile: Option<PathBuf>,
    require_certificate: Option<bool>,
    use_identity_as_username: Option<bool>,
    allow_anonymous_override: Option<bool>,
    max_connection_lifetime: Option<Option<std::time::Duration>>,
    /// Whether a setting that only makes sense with an address was given (a listener with
    /// only policy settings and no address is VerneMQ's default file, and ignored).
    needs_address: bool,
    /// Where it was first named.
    file: String,
    line: usize,
}

/// The settings a transport may give all its listeners (`listener.<transport>.<setting>`).
const TRANSPORT_SETTINGS: [&str; 9] = [
    "allow_anonymous_override",
    "max_connection_lifetime",
    "mountpoint",
    "max_connections",
    "certfile",
    "keyfile",
    "cafile",
    "require_certificate",
    "use_identity_as_username",
];

/// `max_connection_lifetime`: seconds (or a duration); 0 is no limit.
pub(super) fn lifetime(v: &str) -> Result<Option<std::time::Duration>, String> {
    let d = match v.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => super::parse_duration(v)?.unwrap_or_default(),
    };
    Ok((!d.is_zero()).then_some(d))
}

/// One HTTP listener (metrics, health, status page, management API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListenerConfig {
    /// The name after `listener.http.`.
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
}

/// Adds or replaces `listener.http.<name> = ip:port`.
pub(super) fn set_http(
    list: &mut Vec<HttpListenerConfig>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let name = &key["listener.http.".len()..];
    if name.is_empty() || name.contains('.') {
        return Err(format!(
            "expected listener.http.<name> = ip:port, got {key:?}"
        ));
    }
    let addr = value
        .parse()
        .map_err(|_| format!("expected ip:port, got {value:?}"))?;
    list.retain(|l| l.name != name);
    list.push(HttpListenerConfig {
        name: name.to_owned(),
        addr,
    });
    Ok(())
}

/// The MQTT listeners of a file, as its lines are read.
#[derive(Debug, Default)]
pub(super) struct Builder {
    partial: BTreeMap<(Transport, String), PartialListener>,
    defaults: BTreeMap<Transport, PartialListener>,
}

impl Builder {
    /// Takes a `listener.<transport>.<name>[.<setting>]` line; `false` if `key` is not one.
    pub(super) fn set(
        &mut self,
        key: &str,
        value: &str,
        (file, line): (String, usize),
    ) -> Result<bool, String> {
        let transport = [
            Transport::Tcp,
            Transport::Ssl,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|t| key.starts_with(&format!("listener.{}.", t.key())));
        let Some(transport) = transport else {
            return Ok(false);
        };
        let rest = &key[format!("listener.{}.", transport.key()).len()..];
        let (name, sub) = match rest.split_once('.') {
            Some((n, s)) => (n, Some(s)),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err("listener name missing".into());
        }
        let entry = if sub.is_none() && TRANSPORT_SETTINGS.contains(&name) {
            // `listener.ssl.cafile`: for every ssl listener that does not set its own.
            self.defaults.entry(transport).or_default()
        } else {
            self.partial
                .entry((transport, name.to_owned()))
                .or_insert_with(|| PartialListener {
                    file,
                    line,
                    ..PartialListener::default()
                })
        };
        let sub = if sub.is_none() && TRANSPORT_SETTINGS.contains(&name) {
            Some(name)
        } else {
            sub
        };
        let tls_only = |s: &str| -> Result<(), String> {
            if transport.is_tls() {
                Ok(())
            } else {
                Err(format!("{s} is a setting of ssl and wss listeners"))
            }
        };
        if !matches!(
            sub,
            Some("allow_anonymous_override" | "max_connection_lifetime")
        ) {
            entry.needs_address = true;
        }
        match sub {
            None => {
                entry.addr = Some(
                    value
                        .parse()
                        .map_err(|_| format!("expected ip:port, got {value:?}"))?,
                )
            }
            Some("mountpoint") => entry.mountpoint = Some(value.to_owned()),
            Some("allow_anonymous_override") => {
                entry.allow_anonymous_override = Some(parse_flag(value)?)
            }
            Some("max_connection_lifetime") => {
                entry.max_connection_lifetime = Some(lifetime(value)?)
            }
            Some("max_connections") => entry.max_connections = Some(parse_limit(value)?),
            Some(s @ "certfile") => {
                tls_only(s)?;
                entry.certfile = Some(PathBuf::from(value));
            }
            Some(s @ "keyfile") => {
                tls_only(s)?;
                entry.keyfile = Some(PathBuf::from(value));
            }
            Some(s @ "cafile") => {
                tls_only(s)?;
                entry.cafile = Some(PathBuf::from(value));
            }
            Some(s @ "require_certificate") => {
                tls_only(s)?;
                entry.require_certificate = Some(parse_flag(value)?);
            }
            Some(s @ "use_identity_as_username") => {
                tls_only(s)?;
                entry.use_identity_as_username = Some(parse_flag(value)?);
            }
            Some(other) => return Err(format!("unknown listener setting {other:?}")),
        }
        Ok(true)
    }

    /// Checks every listener (an address, the TLS files it needs) and gives the list, sorted
    /// by transport then name; a listener's own settings win over its transport's;
    /// `default_max` is `listener.max_connections`. Every problem is reported.
    pub(super) fn finish(
        mut self,
        default_max: Option<usize>,
        default_lifetime: Option<std::time::Duration>,
    ) -> Result<Vec<TcpListenerConfig>, Vec<ConfigError>> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for ((transport, name), l) in std::mem::take(&mut self.partial) {
            let d = self.defaults.entry(transport).or_default();
            let at = |message: String| ConfigError::Line {
                file: l.file.clone(),
                line: l.line,
                message,
            };
            let full = format!("listener.{}.{name}", transport.key());
            let Some(addr) = l.addr else {
                if l.needs_address {
                    problems.push(at(format!("{full} has settings but no address")));
                }
                continue;
            };
            let tls = TlsConfig {
                certfile: l.certfile.or_else(|| d.certfile.clone()),
                keyfile: l.keyfile.or_else(|| d.keyfile.clone()),
                cafile: l.cafile.or_else(|| d.cafile.clone()),
                require_certificate: l
                    .require_certificate
                    .or(d.require_certificate)
                    .unwrap_or(false),
                use_identity_as_username: l
                    .use_identity_as_username
                    .or(d.use_identity_as_username)
                    .unwrap_or(false),
            };
            if transport.is_tls() && (tls.certfile.is_none() || tls.keyfile.is_none()) {
                problems.push(at(format!(
                    "{full} needs {full}.certfile and {full}.keyfile (or listener.{t}.certfile and listener.{t}.keyfile)",
                    t = transport.key()
                )));
                continue;
            }
            if tls.require_certificate && tls.cafile.is_none() {
                problems.push(at(format!(
                    "{full}.require_certificate needs {full}.cafile (the CA client certificates are checked against)"
                )));
                continue;
            }
            out.push(TcpListenerConfig {
                name,
                transport,
                addr,
                mountpoint: l
                    .mountpoint
                    .or_else(|| d.mountpoint.clone())
                    .unwrap_or_default(),
                max_connections: l
                    .max_connections
                    .or(d.max_connections)
                    .unwrap_or(default_max),
                tls,
                allow_anonymous_override: l
                    .allow_anonymous_override
                    .or(d.allow_anonymous_override)
                    .unwrap_or(false),
                max_connection_lifetime: l
                    .max_connection_lifetime
                    .or(d.max_connection_lifetime)
                    .unwrap_or(default_lifetime),
            });
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }
}
