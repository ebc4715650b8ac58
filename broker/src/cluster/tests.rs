//! The cluster's pieces over real sockets: a link's buffer, pacing and drops; the cookie and
//! TLS handshakes; a publish crossing a link into an engine.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::link::{Identity, Link, dial};
use super::wire;
use crate::cluster::inbound::{self, InboundStats, Receiver};
use crate::cluster::takeover::{Links, Takeovers};
use crate::cluster::wire::{Body, Frame, Publish};
use crate::config::Config;
use crate::engine::Backlog;
use crate::engine::Engine;
use crate::message::Message;
use crate::mqtt::{Properties, QoS};
use crate::store::message_record;

fn me(node: &str, cookie: &str) -> Identity {
    Identity {
        node: node.into(),
        cookie: cookie.into(),
        tls: None,
    }
}

#[test]
fn a_full_buffer_drops_and_counts() {
    let link = Link::new("n2".into(), 100, CancellationToken::new(), Arc::default());
    assert!(link.send(&[0; 60]));
    assert!(!link.send(&[0; 60]), "60 + 60 > 100");
    assert!(link.send(&[0; 40]), "exactly full");
    assert_eq!(link.queued_bytes(), 100);
    assert_eq!(link.stats.bytes_dropped.load(Relaxed), 60);
    assert_eq!(link.stats.frames_dropped.load(Relaxed), 1);
    let taken = link.take();
    assert_eq!((taken.bytes.len(), taken.frames), (100, 2));
    assert_eq!(link.queued_bytes(), 0);
}

#[tokio::test]
async fn publishers_pause_on_an_up_link_over_its_mark_until_the_writer_takes() {
    let link = Link::new(
        "n2".into(),
        4 << 20,
        CancellationToken::new(),
        Arc::default(),
    );
    for _ in 0..3 {
        assert!(link.send(&vec![0; 512 << 10]));
    }
    assert!(!link.congested(), "a down link is not waited for");
    link.stats.up.store(true, Relaxed);
    assert!(link.congested(), "1.5 MB over a 1 MB mark");
    let mut waiting = Box::pin(Backlog::drained(&*link));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    link.take();
    assert!(futures::poll!(waiting.as_mut()).is_ready());
    assert!(!link.congested());
    // Not congested: no wait at all.
    assert!(futures::poll!(Box::pin(Backlog::drained(&*link))).is_ready());
}

/// A cluster listener serving `engine` as node `me`.
async fn listener(engine: Arc<Engine>, me: Identity) -> (SocketAddr, Arc<InboundStats>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stats = Arc::new(InboundStats::default());
    let rx = Receiver {
        engine,
        me,
        stats: stats.clone(),
        joins: tokio::sync::mpsc::channel(1).0,
        gate: Arc::default(),
        takeovers: Arc::new(Takeovers::new(
            Links::default(),
            Duration::from_secs(1),
            Arc::new(crate::cluster::readiness::Readiness::new(Default::default())),
        )),
    };
    tokio::spawn(inbound::run(l, rx, CancellationToken::new()));
    (addr, stats)
}

/// A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`; returns the
/// cluster TLS settings using them.
fn pki(dir: &std::path::Path, name: &str) -> crate::config::ClusterTls {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let path = |f: &str| dir.join(format!("{name}-{f}"));
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    crate::config::ClusterTls {
        certfile: Some(path("cert.pem")),
        keyfile: Some(path("key.pem")),
        cafile: Some(path("ca.pem")),
        require_certificate: true,
    }
}

#[tokio::test]
async fn links_over_tls_need_a_certificate_of_the_clusters_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Arc::new(crate::cluster::tls::Tls::new(&pki(dir.path(), "ours")).unwrap());
    let theirs = Arc::new(crate::cluster::tls::Tls::new(&pki(dir.path(), "theirs")).unwrap());
    let engine = Engine::for_tests(Config::default());
    let n1 = Identity {
        tls: Some(ours.clone()),
        ..me("n1", "vmq")
    };
    let (addr, stats) = listener(engine, n1).await;
    let with = |tls| Identity {
        tls,
        ..me("n2", "vmq")
    };
    let (_, peer) = dial(addr, &with(Some(ours))).await.unwrap();
    assert_eq!(peer, "n1");
    let Err(e) = dial(addr, &with(Some(theirs))).await else {
        panic!("a certificate of another CA was accepted");
    };
    assert!(e.contains("TLS"), "{e}");
    assert!(
        dial(addr, &with(None)).await.is_err(),
        "plain TCP to a TLS listener"
    );
    assert_eq!(stats.links.load(Relaxed), 1);
}

#[test]
fn tls_settings_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = pki(dir.path(), "x");
    c.cafile = None;
    let e = crate::cluster::tls::Tls::new(&c).unwrap_err();
    assert!(e.contains("require_certificate"), "{e}");
    c.keyfile = Some(dir.path().join("missing.pem"));
    c.require_certificate = false;
    let e = crate::cluster::tls::Tls::new(&c).unwrap_err();
    assert!(e.contains("listener.vmqs.keyfile"), "{e}");
}

#[tokio::test]
async fn a_peer_without_the_cookie_is_refused_and_one_with_it_is_heard() {
    let engine = Engine::for_tests(Config::default());
    let (addr, stats) = listener(engine.clone(), me("n1", "secret")).await;
    let Err(e) = dial(addr, &me("n2", "guess")).await else {
        panic!("a wrong cookie was accepted");
    };
    assert!(e.contains("distributed_cookie"), "{e}");

    let link = Link::new(
        "n1".into(),
        1 << 20,
        CancellationToken::new(),
        Arc::default(),
    );
    link.set_addr(addr);
    tokio::spawn(
        link.clone()
            .run(me("n2", "secret"), Duration::from_millis(50)),
    );
    let message = Message {
        topic: "r/1".into(),
        payload: bytes::Bytes::from_static(b"kept"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
        expires_at: None,
        publisher: None,
    };
    let now = (std::time::SystemTime::now(), tokio::time::Instant::now());
    link.send(&wire::frame(&Frame {
        body: Some(Body::Publish(Publish {
            mountpoint: String::new(),
            message: Some(message_record(&message, now)),
            groups: Vec::new(),
            store_only: false,
        })),
    }));
    for _ in 0..100 {
        if engine.retained_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(engine.retained_matching("", "r/#")[0].payload, "kept");
    assert_eq!(stats.publishes_in.load(Relaxed), 1);
    assert_eq!(stats.links.load(Relaxed), 1);
    assert!(stats.refused.load(Relaxed) >= 1);
    assert!(link.stats.up.load(Relaxed));
    link.close();
}
