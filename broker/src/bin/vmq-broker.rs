//! `vmq-broker --config <file>`: runs the broker until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vmq_broker::{Config, Server};

#[derive(Parser, Debug)]
#[command(version, about = "An MQTT broker in the mould of VerneMQ")]
struct Args {
    /// The vernemq.conf-style configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// SIGHUP reloads the TLS certificates of every listener (new connections get them; a
/// certificate that does not load leaves the old one in place, and says so).
fn reload_on_sighup(listeners: Vec<std::sync::Arc<vmq_broker::listener::ListenerHandle>>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            for l in &listeners {
                if let Err(e) = l.reload_tls() {
                    tracing::error!(listener = %l.name, error = %e, "TLS reload failed; keeping the current certificates");
                }
            }
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    let level = match config.log_console_level.as_str() {
        "warning" => "warn",
        other => other,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let server = Server::start(config)
        .await
        .context("cannot start the broker")?;
    for addr in server.local_addrs() {
        eprintln!("vmq-broker: MQTT listening on {addr}");
    }
    for addr in server.http_addrs() {
        eprintln!("vmq-broker: HTTP listening on {addr}");
    }
    reload_on_sighup(server.listeners().to_vec());
    shutdown_signal().await;
    tracing::info!(
        "shutting down: disconnecting clients, then draining the events relay (a second signal exits at once)"
    );
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("vmq-broker: second signal, exiting at once");
        std::process::exit(130);
    });
    let stopped = server.shutdown(Duration::from_secs(5)).await;
    tracing::info!(
        connections_closed = stopped.connections_closed,
        "broker stopped"
    );
    Ok(())
}
