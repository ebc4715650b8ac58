//! The seed's Go example done right: every event the broker relays, one JSON line each, in the
//! proto3 JSON mapping with an `"@type"` key (as protobuf renders an `Any`).
//!
//! ```text
//! cargo run --release --example log_sidecar -- --listen 127.0.0.1:8890 --output events.jsonl
//! ```
//! `--output -` writes to stdout. Frames that do not decode are logged on stderr and counted;
//! the connection goes on. On SIGINT/SIGTERM it stops accepting, handles what it has read,
//! flushes and prints its counters.
//!
//! With a broker in at-least-once mode (`vmq_events_sidecar.delivery = at_least_once`), each
//! line is `{"sequence": {"epoch": .., "lane": .., "seq": .., "resent": ..}, "event": {..}}`,
//! and events are acknowledged only once their line is flushed to the output: a sidecar killed
//! at any point loses nothing (the broker sends again what was not acknowledged; a consumer
//! drops the lines whose (epoch, lane, seq) it has seen).

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::sync::mpsc;
use vmq_sidecar_sdk::bytes::Bytes;
use vmq_sidecar_sdk::{
    DEFAULT_MAX_FRAME_LENGTH, Event, EventView, Handler, JsonRenderer, Peer, Sequence, Server,
};

#[derive(Parser, Debug)]
#[command(about = "Writes every relayed hook event as a JSON line")]
struct Args {
    /// Address to listen on (the broker's vmq_events_sidecar.hostname:port).
    #[arg(long, default_value = vmq_sidecar_sdk::DEFAULT_ADDR)]
    listen: SocketAddr,
    /// File to append JSON lines to, or `-` for stdout.
    #[arg(long, default_value = "-")]
    output: PathBuf,
    /// Use the .proto field names (client_id) instead of lowerCamelCase (clientId).
    #[arg(long)]
    proto_field_names: bool,
    /// Largest frame accepted, in bytes; a connection announcing more is closed.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_LENGTH)]
    max_frame_length: usize,
}

/// Renders on the connection's task (in parallel across connections) and hands the line to
/// the single writer, through a bounded queue: a slow disk slows the sockets, not memory.
struct JsonLines {
    renderer: JsonRenderer,
    lines: mpsc::Sender<Line>,
}

/// A rendered line, and (at least once) the event's number, acknowledged once it is flushed.
type Line = (Vec<u8>, Option<Sequence>);

impl JsonLines {
    async fn line(&self, peer: &Peer, event: &Event, seq: Option<Sequence>) {
        let mut line = Vec::with_capacity(320);
        if let Some(s) = &seq {
            line.extend_from_slice(
                format!(
                    "{{\"sequence\":{{\"epoch\":{},\"lane\":{},\"seq\":{},\"resent\":{}}},\"event\":",
                    s.epoch, s.lane, s.seq, s.resent
                )
                .as_bytes(),
            );
        }
        match self.renderer.write(&mut line, event) {
            Ok(()) => {
                if seq.is_some() {
                    line.push(b'}');
                }
                line.push(b'\n');
                let _ = self.lines.send((line, seq)).await;
            }
            Err(e) => {
                tracing::warn!(peer = %peer.addr, hook = event.hook(), error = %e, "event not rendered");
                // Nothing to write: acknowledged, or the broker would send it forever.
                if let Some(s) = seq {
                    s.ack();
                }
            }
        }
    }
}

impl Handler for JsonLines {
    async fn on_event(&self, peer: &Peer, event: Event) {
        self.line(peer, &event, None).await;
    }

    async fn on_sequenced(&self, peer: &Peer, seq: &Sequence, view: EventView<'_>, frame: &Bytes) {
        self.line(peer, &view.to_event_in(frame), Some(seq.clone()))
            .await;
    }

    /// Acknowledged by the writer, once the line is flushed.
    fn acks_explicitly(&self) -> bool {
        true
    }
}

fn open_output(path: &PathBuf) -> anyhow::Result<Box<dyn Write + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdout()));
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open output file {}", path.display()))?;
    Ok(Box::new(file))
}

/// Writes lines as they come, flushing whenever the queue runs dry; then acknowledges the
/// flushed events (at least once).
fn write_lines(
    mut out: BufWriter<Box<dyn Write + Send>>,
    mut lines: mpsc::Receiver<Line>,
) -> io::Result<u64> {
    let mut written = 0;
    let mut flushed: Vec<Sequence> = Vec::new();
    while let Some(first) = lines.blocking_recv() {
        let mut next = Some(first);
        while let Some((line, seq)) = next {
            out.write_all(&line)?;
            written += 1;
            flushed.extend(seq);
            next = lines.try_recv().ok();
        }
        out.flush()?;
        for seq in flushed.drain(..) {
            seq.ack();
        }
    }
    out.flush()?;
    Ok(written)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vmq_examples::init_logging();
    let args = Args::parse();
    let out = BufWriter::with_capacity(64 * 1024, open_output(&args.output)?);
    let server = Server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?
        .with_max_frame_length(args.max_frame_length);
    let stats = server.stats();
    eprintln!(
        "log_sidecar: listening on {}, writing JSON lines to {}",
        server.local_addr()?,
        args.output.display()
    );

    let (tx, rx) = mpsc::channel(8192);
    let writer = tokio::task::spawn_blocking(move || write_lines(out, rx));
    let handler = JsonLines {
        renderer: JsonRenderer::new().proto_field_names(args.proto_field_names),
        lines: tx,
    };
    server
        .serve_with_shutdown(handler, vmq_examples::shutdown_signal())
        .await;
    // The handler (and its sender) is dropped once every connection is done: the writer drains.
    let written = writer.await?.context("writing output failed")?;
    eprintln!(
        "log_sidecar: {written} lines written; {:?}",
        stats.snapshot()
    );
    Ok(())
}
