//! TLS for `ssl` and `wss` listeners (rustls, TLS 1.2 and 1.3, ring): the server certificate
//! and key from PEM files, client certificates checked against `cafile` (required with
//! `require_certificate = on`, optional otherwise), and the certificate's common name as the
//! username with `use_identity_as_username = on`.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TcpListenerConfig;

fn err(
    l: &TcpListenerConfig,
    what: &str,
    path: &Path,
    e: impl std::fmt::Display,
) -> std::io::Error {
    std::io::Error::other(format!(
        "listener.{}.{}.{what} {}: {e}",
        l.transport.key(),
        l.name,
        path.display()
    ))
}

fn certs(
    l: &TcpListenerConfig,
    what: &str,
    path: &Path,
) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(l, what, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(l, what, path, e))?;
    if certs.is_empty() {
        return Err(err(l, what, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A listener's TLS settings, ready to accept.
#[derive(Clone)]
pub struct Acceptor(pub TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

/// Builds the listener's TLS acceptor; a missing or unreadable file is a clear error.
pub fn acceptor(l: &TcpListenerConfig) -> std::io::Result<Acceptor> {
    let (Some(certfile), Some(keyfile)) = (&l.tls.certfile, &l.tls.keyfile) else {
        return Err(std::io::Error::other(format!(
            "listener.{}.{} needs certfile and keyfile",
            l.transport.key(),
            l.name
        )));
    };
    let chain = certs(l, "certfile", certfile)?;
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| err(l, "keyfile", keyfile, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(std::io::Error::other)?;
    let builder = match &l.tls.cafile {
        Some(cafile) => {
            let mut roots = RootCertStore::empty();
            for c in certs(l, "cafile", cafile)? {
                roots.add(c).map_err(|e| err(l, "cafile", cafile, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if l.tls.require_certificate {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| err(l, "cafile", cafile, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err(l, "keyfile", keyfile, e))?;
    Ok(Acceptor(TlsAcceptor::from(Arc::new(config))))
}

/// The common name of a client certificate (DER), for `use_identity_as_username`.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
