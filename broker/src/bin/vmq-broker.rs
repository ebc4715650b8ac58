//! `vmq-broker --config <file>`: runs the broker until SIGINT or SIGTERM.
//! `vmq-broker --config <file> --check`: validates the file and says what it does, binding
//! nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vmq_broker::config::keys::KeyClass;
use vmq_broker::{Config, Server};

#[derive(Parser, Debug)]
#[command(version, about = "An MQTT broker in the mould of VerneMQ")]
struct Args {
    /// The vernemq.conf-style configuration file. VerneMQ's Docker variables
    /// (DOCKER_VERNEMQ_<KEY>=value, `__` for `.`) are applied over it.
    #[arg(long, short)]
    config: PathBuf,
    /// Check the file (and the environment's DOCKER_VERNEMQ_* settings), list the VerneMQ
    /// keys that have no effect here, and exit: 0 if it is valid, 1 if not.
    #[arg(long)]
    check: bool,
}

/// Reads the config and the environment; every problem is printed on a line of its own (no
/// backtrace, whatever RUST_BACKTRACE says).
fn load(args: &Args) -> Option<Config> {
    let checked = Config::load_with_env(&args.config, std::env::vars())
        .and_then(|c| vmq_broker::plugins::check(&c).map(|()| c));
    match checked {
        Ok(c) => Some(c),
        Err(e) => {
            for problem in e.problems() {
                eprintln!("vmq-broker: {problem}");
            }
            None
        }
    }
}

/// `--check`: what the file sets that does nothing here (a closed pipe ends the listing).
fn report(args: &Args, config: &Config) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (var, key, value) in &config.environment {
        writeln!(out, "environment {var}: {key} = {value}")?;
    }
    for a in &config.accepted {
        match a.class {
            KeyClass::NoEffect(why) => {
                writeln!(out, "{}: {} has no effect here: {why}", a.origin, a.key)?
            }
            KeyClass::NotYet(what) => {
                writeln!(out, "{}: {} is not implemented: {what}", a.origin, a.key)?
            }
        }
    }
    if config.accepted.is_empty() {
        writeln!(out, "every key is implemented")?;
    }
    writeln!(out, "{}: valid", args.config.display())
}

/// mimalloc rather than glibc's malloc: messages are allocated on one thread and freed on
/// another all the time (a publisher's task, subscribers' tasks, Lua threads), and glibc then
/// serialises them on its arena locks (QoS 0 fan-in 8->1: +20-25 % throughput; BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(config) = load(&args) else {
        return ExitCode::FAILURE;
    };
    if args.check {
        let _ = report(&args, &config);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmq-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmq-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
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

async fn run(config: Config) -> anyhow::Result<()> {
    vmq_broker::logging::init(&config.log).map_err(anyhow::Error::msg)?;
    // Once each: what the file asks for that this broker does not do.
    for a in config.not_implemented() {
        if let KeyClass::NotYet(what) = a.class {
            tracing::warn!("{}: {} is not implemented here: {what}", a.origin, a.key);
        }
    }
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
