//! MQTT listeners: bind each configured address, accept, and run one connection task per
//! client. A listener that cannot bind stops the broker from starting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::broker::Broker;
use crate::config::TcpListenerConfig;
use crate::session::connection;

/// A bound MQTT listener.
#[derive(Debug)]
pub struct Listener {
    config: TcpListenerConfig,
    socket: TcpListener,
}

impl Listener {
    /// Binds the listener's address.
    pub async fn bind(config: TcpListenerConfig) -> std::io::Result<Listener> {
        let socket = TcpListener::bind(config.addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "listener.tcp.{} cannot bind {}: {e}",
                    config.name, config.addr
                ),
            )
        })?;
        Ok(Listener { config, socket })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Accepts clients until the broker shuts down; connection tasks are tracked by `tasks`.
    pub async fn run(self, broker: Arc<Broker>, tasks: TaskTracker) {
        let addr = self.local_addr().ok();
        info!(name = %self.config.name, ?addr, mountpoint = %self.config.mountpoint, "MQTT listener accepting");
        loop {
            let accepted = tokio::select! {
                () = broker.shutdown.cancelled() => break,
                a = self.socket.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tasks.spawn(connection::run(
                        stream,
                        peer,
                        self.config.mountpoint.clone(),
                        broker.clone(),
                    ));
                }
                Err(e) => {
                    error!(name = %self.config.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
