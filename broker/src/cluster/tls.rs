//! TLS on the cluster links (`listener.vmqs.clustering`): a node accepts links with its
//! certificate, asks the dialling peer for one (required with `require_certificate = on`)
//! checked against `cafile`, and dials peers with the same certificate, checking theirs
//! against `cafile` and their IP address. The cookie handshake then runs inside TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::ClusterTls;
use crate::plugins::client_tls::ClientTls;

/// A link's byte stream: plain TCP or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Both sides of TLS for this node's links.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("listener.vmqs.{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "listener.vmqs.{what} {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

impl Tls {
    /// Reads the files; a missing or unreadable one is an error naming its key.
    pub fn new(c: &ClusterTls) -> Result<Tls, String> {
        let (Some(certfile), Some(keyfile)) = (&c.certfile, &c.keyfile) else {
            return Err("listener.vmqs.clustering needs certfile and keyfile".into());
        };
        let chain = certs("certfile", certfile)?;
        let key = PrivateKeyDer::from_pem_file(keyfile)
            .map_err(|e| format!("listener.vmqs.keyfile {}: {e}", keyfile.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = match &c.cafile {
            Some(cafile) => {
                let mut roots = RootCertStore::empty();
                for cert in certs("cafile", cafile)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("listener.vmqs.cafile: {e}"))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if c.require_certificate {
                    verifier.build()
                } else {
                    verifier.allow_unauthenticated().build()
                }
                .map_err(|e| format!("listener.vmqs.cafile: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None if c.require_certificate => {
                return Err(
                    "listener.vmqs.require_certificate = on needs listener.vmqs.cafile".into(),
                );
            }
            None => builder.with_no_client_auth(),
        };
        let server = builder
            .with_single_cert(chain, key.clone_key())
            .map_err(|e| format!("listener.vmqs.keyfile: {e}"))?;
        let client = ClientTls {
            cafile: c.cafile.clone(),
            system_cas: true,
            certfile: c.certfile.clone(),
            keyfile: c.keyfile.clone(),
            verify_peer: true,
            tls_version: None,
        }
        .config("listener.vmqs")?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The server side of an accepted link.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Box<dyn Stream>, String> {
        let s = self
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(s))
    }

    /// The client side of a link to `addr` (its certificate must name that IP).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> Result<Box<dyn Stream>, String> {
        let name = ServerName::IpAddress(addr.ip().into());
        let s = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {addr}: {e}"))?;
        Ok(Box::new(s))
    }
}
