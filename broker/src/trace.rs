//! `vmq-admin trace client client-id=...`: what one client sends and receives, and the hook
//! points evaluated for it, streamed live as text lines, as VerneMQ's tracer does. While
//! nobody traces, the cost on the connection path is one atomic load per packet.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;

use crate::mqtt::Packet;

/// Lines a trace may have waiting; beyond that, lines are dropped and counted in the stream.
const TRACE_BUFFER: usize = 1024;

/// Longest payload shown in a trace line.
const MAX_PAYLOAD_SHOWN: usize = 512;

#[derive(Debug)]
struct Tap {
    id: u64,
    mountpoint: String,
    client_id: String,
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

/// The active traces.
#[derive(Debug, Default)]
pub struct Tracer {
    active: AtomicUsize,
    next: AtomicU64,
    taps: Mutex<Vec<Tap>>,
}

impl Tracer {
    /// Whether any trace is running (checked before building a line).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Sends the line `make` builds to the traces of this client, if there are any.
    pub fn emit(&self, mountpoint: &str, client_id: &str, make: impl FnOnce() -> String) {
        if !self.is_active() {
            return;
        }
        let taps = self.taps.lock();
        let mut matching = taps
            .iter()
            .filter(|t| t.client_id == client_id && t.mountpoint == mountpoint)
            .peekable();
        if matching.peek().is_none() {
            return;
        }
        let line = format!("{}\n", make());
        for t in matching {
            if t.tx.try_send(line.clone()).is_err() {
                t.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn add(
        &self,
        mountpoint: &str,
        client_id: &str,
    ) -> (Untap<'_>, mpsc::Receiver<String>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::channel(TRACE_BUFFER);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        {
            let mut taps = self.taps.lock();
            taps.push(Tap {
                id,
                mountpoint: mountpoint.to_owned(),
                client_id: client_id.to_owned(),
                tx,
                dropped: dropped.clone(),
            });
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        (Untap { tracer: self, id }, rx, dropped)
    }

    fn remove(&self, id: u64) {
        {
            let mut taps = self.taps.lock();
            let before = taps.len();
            taps.retain(|t| t.id != id);
            if taps.len() < before {
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Removes a trace when its stream is dropped (the HTTP client went away).
struct Untap<'a> {
    tracer: &'a Tracer,
    id: u64,
}

impl Drop for Untap<'_> {
    fn drop(&mut self) {
        self.tracer.remove(self.id);
    }
}

/// Starts tracing the client named in `params` (`client-id=`, optional `mountpoint=`); the
/// stream yields the trace's lines until it is dropped.
/// `online` says whether a client is connected, for the header line.
pub fn start(
    tracer: &Arc<Tracer>,
    stopping: CancellationToken,
    params: &[(String, String)],
    online: impl Fn(&str, &str) -> bool,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, String> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    for (k, _) in params {
        if k != "client-id" && k != "mountpoint" {
            return Err(format!(
                "unknown argument {k:?} (expected: client-id, mountpoint)"
            ));
        }
    }
    let Some(client_id) = get("client-id").filter(|c| !c.is_empty()) else {
        return Err("missing argument client-id=<id>".into());
    };
    let mountpoint = get("mountpoint").unwrap_or_default();
    let online = usize::from(online(&mountpoint, &client_id));
    let header = format!(
        "Starting trace for {online} existing sessions for client {client_id:?} in mountpoint {mountpoint:?}\n"
    );
    Ok(async_stream(
        tracer.clone(),
        stopping,
        mountpoint,
        client_id,
        header,
    ))
}

fn async_stream(
    tracer: Arc<Tracer>,
    stopping: CancellationToken,
    mountpoint: String,
    client_id: String,
    header: String,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let (untap, mut lines, dropped) = tracer.add(&mountpoint, &client_id);
        if tx.send(Bytes::from(header)).await.is_err() {
            return;
        }
        let mut reported = 0;
        loop {
            tokio::select! {
                () = tx.closed() => break,
                () = stopping.cancelled() => break,
                line = lines.recv() => {
                    let Some(line) = line else { break };
                    let lost = dropped.load(Ordering::Relaxed);
                    let mut chunk = String::new();
                    if lost > reported {
                        let _ = writeln!(chunk, "... {} trace lines dropped (reader too slow)", lost - reported);
                        reported = lost;
                    }
                    chunk.push_str(&line);
                    if tx.send(Bytes::from(chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
        drop(untap);
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

fn payload(p: &[u8]) -> String {
    let shown = &p[..p.len().min(MAX_PAYLOAD_SHOWN)];
    let mut s = String::from_utf8_lossy(shown).into_owned();
    if p.len() > MAX_PAYLOAD_SHOWN {
        let _ = write!(s, "... ({} bytes)", p.len());
    }
    s
}

/// What a hook chain answered, for a trace line.
pub fn outcome<M>(asked: bool, decision: Option<&crate::hooks::AuthResult<M>>) -> &'static str {
    use crate::hooks::AuthResult;
    match decision {
        None if asked => "Hook returned \"next\" from every plugin: not authorized",
        Some(AuthResult::Ok(_)) => "Hook returned \"ok\"",
        Some(AuthResult::OkWith(..)) => "Hook returned \"ok\" with modifiers",
        Some(AuthResult::Next) => "Hook returned \"next\" (no plugin decided)",
        Some(AuthResult::Error(_)) => "Hook returned \"error\"",
        None => "No plugin implements the hook: allowed by default",
    }
}

/// A packet as a trace line shows it (VerneMQ's notation).
pub fn describe(p: &Packet) -> String {
    match p {
        Packet::Publish(p) => format!(
            "PUBLISH(d{}, q{}, r{}, m{}, {:?}) with payload:\n    {}",
            u8::from(p.dup),
            p.qos as u8,
            u8::from(p.retain),
            p.packet_id,
            p.topic,
            payload(&p.payload)
        ),
        Packet::Subscribe(s) => {
            let topics: Vec<String> = s
                .filters
                .iter()
                .map(|(f, o)| format!("{f:?} q{}", o.qos as u8))
                .collect();
            format!("SUBSCRIBE(m{}, [{}])", s.packet_id, topics.join(", "))
        }
        Packet::Unsubscribe(u) => format!("UNSUBSCRIBE(m{}, {:?})", u.packet_id, u.filters),
        Packet::PubAck(r) => format!("PUBACK(m{}, rc{})", r.packet_id, r.reason),
        Packet::PubRec(r) => format!("PUBREC(m{}, rc{})", r.packet_id, r.reason),
        Packet::PubRel(r) => format!("PUBREL(m{}, rc{})", r.packet_id, r.reason),
        Packet::PubComp(r) => format!("PUBCOMP(m{}, rc{})", r.packet_id, r.reason),
        Packet::SubAck(s) => format!("SUBACK(m{}, {:?})", s.packet_id, s.reasons),
        Packet::UnsubAck(s) => format!("UNSUBACK(m{}, {:?})", s.packet_id, s.reasons),
        Packet::ConnAck(a) => format!("CONNACK(sp{}, rc{})", u8::from(a.session_present), a.code),
        Packet::Disconnect(d) => format!("DISCONNECT(rc{})", d.reason),
        other => format!("{}()", other.name()),
    }
}
