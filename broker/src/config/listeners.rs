//! Listener settings: `listener.tcp|ssl|ws|wss.<name> = ip:port` with their per-listener
//! settings (mountpoint, limits, TLS files), and `listener.http.<name>`. Settings may come in
//! any order; the listeners are checked once the whole file is read.

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
}

/// A listener as it is being read from the file.
#[derive(Debug, Default)]
struct PartialListener {
    addr: Option<SocketAddr>,
    mountpoint: String,
    max_connections: Option<usize>,
    tls: TlsConfig,
    line: usize,
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
}

impl Builder {
    /// Takes a `listener.<transport>.<name>[.<setting>]` line; `false` if `key` is not one.
    pub(super) fn set(&mut self, key: &str, value: &str, line: usize) -> Result<bool, String> {
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
        let entry = self
            .partial
            .entry((transport, name.to_owned()))
            .or_insert_with(|| PartialListener {
                line,
                ..PartialListener::default()
            });
        let tls_only = |s: &str| -> Result<(), String> {
            if transport.is_tls() {
                Ok(())
            } else {
                Err(format!("{s} is a setting of ssl and wss listeners"))
            }
        };
        match sub {
            None => {
                entry.addr = Some(
                    value
                        .parse()
                        .map_err(|_| format!("expected ip:port, got {value:?}"))?,
                )
            }
            Some("mountpoint") => entry.mountpoint = value.to_owned(),
            Some("max_connections") => entry.max_connections = parse_limit(value)?,
            Some(s @ "certfile") => {
                tls_only(s)?;
                entry.tls.certfile = Some(PathBuf::from(value));
            }
            Some(s @ "keyfile") => {
                tls_only(s)?;
                entry.tls.keyfile = Some(PathBuf::from(value));
            }
            Some(s @ "cafile") => {
                tls_only(s)?;
                entry.tls.cafile = Some(PathBuf::from(value));
            }
            Some(s @ "require_certificate") => {
                tls_only(s)?;
                entry.tls.require_certificate = parse_flag(value)?;
            }
            Some(s @ "use_identity_as_username") => {
                tls_only(s)?;
                entry.tls.use_identity_as_username = parse_flag(value)?;
            }
            Some(other) => return Err(format!("unknown listener setting {other:?}")),
        }
        Ok(true)
    }

    /// Checks every listener (an address, the TLS files it needs) and gives the list, sorted
    /// by transport then name; `default_max` is `listener.max_connections`.
    pub(super) fn finish(
        self,
        default_max: Option<usize>,
        file: &str,
    ) -> Result<Vec<TcpListenerConfig>, ConfigError> {
        let mut out = Vec::new();
        for ((transport, name), l) in self.partial {
            let at = |message: String| ConfigError::Line {
                file: file.to_owned(),
                line: l.line,
                message,
            };
            let full = format!("listener.{}.{name}", transport.key());
            let addr = l
                .addr
                .ok_or_else(|| at(format!("{full} has settings but no address")))?;
            if transport.is_tls() && (l.tls.certfile.is_none() || l.tls.keyfile.is_none()) {
                return Err(at(format!(
                    "{full} needs {full}.certfile and {full}.keyfile"
                )));
            }
            if l.tls.require_certificate && l.tls.cafile.is_none() {
                return Err(at(format!(
                    "{full}.require_certificate needs {full}.cafile (the CA client certificates are checked against)"
                )));
            }
            out.push(TcpListenerConfig {
                name,
                transport,
                addr,
                mountpoint: l.mountpoint,
                max_connections: l.max_connections.or(default_max),
                tls: l.tls,
            });
        }
        Ok(out)
    }
}
