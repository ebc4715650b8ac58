//! `vmq_webhooks` towards `https://` endpoints: the `vmq-broker` binary, mosquitto_pub, and
//! the test endpoint served over TLS (rustls) with a test CA made by rcgen, requiring a client
//! certificate.

mod support;

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use support::endpoint::{Endpoint, handle, ok_reply};
use support::{mosquitto_pub, text, webhooks_broker as broker};

/// The endpoint over TLS, requiring a client certificate signed by the test CA.
struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.inner.accept().await else {
                continue;
            };
            // A client that fails the handshake (no certificate, or it refused ours) is
            // simply not served.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn tls_endpoint(pki: &Path) -> Endpoint {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(pki.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = inner.local_addr().unwrap().port();
    let e = Endpoint {
        url: format!("https://localhost:{port}/vmq"),
        calls: Arc::default(),
        responder: Arc::new(Mutex::new(Arc::new(ok_reply))),
    };
    let app = axum::Router::new()
        .route("/vmq", axum::routing::post(handle))
        .with_state(e.clone());
    let listener = TlsListener {
        inner,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_with_a_ca_a_client_certificate_or_no_verification() {
    let dir = tempfile::tempdir().unwrap();
    support::make_pki(dir.path());
    let ep = tls_endpoint(dir.path()).await;
    let pki = |f: &str| dir.path().join(f).display().to_string();
    let client_cert = format!(
        "vmq_webhooks.certfile = {}\nvmq_webhooks.keyfile = {}\n",
        pki("client.pem"),
        pki("client.key")
    );
    let cases = [
        // The endpoint's CA given: verified, and our client certificate accepted.
        (
            "ca",
            format!("vmq_webhooks.cafile = {}\n{client_cert}", pki("ca.pem")),
            true,
        ),
        // The system's CAs do not know the test CA: refused.
        ("system", client_cert.clone(), false),
        // Nothing verified.
        (
            "noverify",
            format!("vmq_webhooks.verify_peer = off\n{client_cert}"),
            true,
        ),
        // Verified, but without a client certificate the endpoint does not serve us.
        (
            "nocert",
            format!("vmq_webhooks.cafile = {}\n", pki("ca.pem")),
            false,
        ),
    ];
    for (name, extra, works) in cases {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let (b, port, _) = broker(&sub, &extra, &[("auth_on_register", &ep.url)]);
        let o = mosquitto_pub(&port, &["-i", name, "-t", "t", "-m", "x"]).await;
        assert_eq!(o.status.success(), works, "{name}: {}", text(&o));
        if !works {
            assert!(text(&o).contains("not authorised"), "{name}: {}", text(&o));
        }
        drop(b);
    }
    let seen: Vec<String> = ep
        .calls("auth_on_register")
        .iter()
        .map(|c| c.body["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["ca", "noverify"]);
}
