//! TLS for the connections plugins open (webhook endpoints, databases): the server checked
//! against a CA file or the system's bundle, an optional client certificate, or no check at
//! all when the operator says so (`verify_peer = off`, `ssl.verify = verify_none`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

/// How a plugin's client connections use TLS.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientTls {
    /// CA bundle (PEM); the system's bundle when unset (and `system_cas`).
    pub cafile: Option<PathBuf>,
    /// Whether the system's bundle is used when there is no `cafile`.
    pub system_cas: bool,
    /// Client certificate (PEM) for mutual TLS.
    pub certfile: Option<PathBuf>,
    /// Its key (PEM).
    pub keyfile: Option<PathBuf>,
    /// Check the server's certificate and name.
    pub verify_peer: bool,
    /// The one version offered (VerneMQ's webhooks offer one); `None`: TLS 1.2 and 1.3.
    pub tls_version: Option<&'static rustls::SupportedProtocolVersion>,
}

fn read_certs(path: &std::path::Path, who: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{who}: {}: {e}", path.display()))
}

/// Where Debian, Fedora and Alpine keep the system's CA bundle.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

impl ClientTls {
    /// The rustls configuration (ring, as the listeners); errors name `who` (the plugin).
    pub fn config(&self, who: &str) -> Result<rustls::ClientConfig, String> {
        let t = self;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = match t.tls_version {
            Some(v) => vec![v],
            None => rustls::DEFAULT_VERSIONS.to_vec(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("{who}: TLS: {e}"))?;
        let builder = if t.verify_peer {
            let mut roots = RootCertStore::empty();
            let bundle = match &t.cafile {
                Some(f) => Some(f.clone()),
                None if !t.system_cas => None,
                None => std::env::var_os("SSL_CERT_FILE")
                    .map(Into::into)
                    .or_else(|| {
                        SYSTEM_BUNDLES
                            .iter()
                            .map(std::path::PathBuf::from)
                            .find(|p| p.exists())
                    }),
            };
            if let Some(bundle) = bundle {
                for cert in read_certs(&bundle, who)? {
                    // A bundle may hold certificates webpki cannot use; the others still count.
                    let _ = roots.add(cert);
                }
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        };
        match (&t.certfile, &t.keyfile) {
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{who}.keyfile {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(read_certs(cert, who)?, key)
                    .map_err(|e| format!("{who}: client certificate: {e}"))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

/// `verify_peer = off`: any certificate and any name are accepted (signatures are still
/// checked, so the handshake itself is sound).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
