//! The seed's Go example done right: every event the broker relays, one JSON line each, in the
//! proto3 JSON mapping with an `"@type"` key (as protobuf renders an `Any`).
//!
//! ```text
//! cargo run --release --example log_sidecar -- --listen 127.0.0.1:8890 --output events.jsonl
//! ```
//! `--output -` writes to stdout. Frames that do not decode are logged on stderr and counted;
//! the connection goes on. On SIGINT/SIGTERM it stops accepting, handles what it has read,
//! flushes and prints its counters.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::sync::mpsc;
use vmq_sidecar_sdk::{DEFAULT_MAX_FRAME_LENGTH, Event, Handler, JsonRenderer, Peer, Server};

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
    lines: mpsc::Sender<Vec<u8>>,
}

impl Handler for JsonLines {
    async fn on_event(&self, peer: &Peer, event: Event) {
        let mut line = Vec::with_capacity(256);
        match self.renderer.write(&mut line, &event) {
            Ok(()) => {
                line.push(b'\n');
                let _ = self.lines.send(line).await;
            }
            Err(e) => {
                tracing::warn!(peer = %peer.addr, hook = event.hook(), error = %e, "event not rendered")
            }
        }
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

/// Writes lines as they come, flushing whenever the queue runs dry.
fn write_lines(
    mut out: BufWriter<Box<dyn Write + Send>>,
    mut lines: mpsc::Receiver<Vec<u8>>,
) -> io::Result<u64> {
    let mut written = 0;
    while let Some(line) = lines.blocking_recv() {
        out.write_all(&line)?;
        written += 1;
        while let Ok(line) = lines.try_recv() {
            out.write_all(&line)?;
            written += 1;
        }
        out.flush()?;
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
