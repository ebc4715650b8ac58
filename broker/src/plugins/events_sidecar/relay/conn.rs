//! The relay's sidecar connections, opened and checked by bb8.

use std::io;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::{CONNECT_TIMEOUT, MAX_INBOX};

/// A sidecar connection as the pool hands it out.
#[derive(Debug)]
pub struct SidecarConn {
    pub(super) stream: TcpStream,
    pub(super) broken: bool,
    /// At least once: what the sidecar sent (acknowledgements) and is not read yet.
    pub(super) inbox: BytesMut,
}

impl SidecarConn {
    /// Reads what the sidecar sent, keeping it in `inbox` if `keep` (at least once: its
    /// acknowledgements), discarding it otherwise (a sidecar at most once has nothing to say).
    /// True if the sidecar has closed its side, the socket failed, or the inbox overflowed.
    pub(super) fn read_incoming(&mut self, keep: bool) -> bool {
        let mut scratch = [0u8; 1024];
        loop {
            match self.stream.try_read(&mut scratch) {
                Ok(0) => return true,
                Ok(n) if keep => {
                    if self.inbox.len() + n > MAX_INBOX {
                        return true;
                    }
                    self.inbox.extend_from_slice(&scratch[..n]);
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

/// Opens connections to the sidecar for bb8.
#[derive(Debug, Clone)]
pub struct Connector {
    pub(super) addr: String,
}

impl bb8::ManageConnection for Connector {
    type Connection = SidecarConn;
    type Error = io::Error;

    async fn connect(&self) -> Result<SidecarConn, io::Error> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(SidecarConn {
            stream,
            broken: false,
            inbox: BytesMut::new(),
        })
    }

    async fn is_valid(&self, conn: &mut SidecarConn) -> Result<(), io::Error> {
        // A pooled connection is only checked out by its own lane's writer, which read what it
        // needed before giving it back: anything left is stale.
        conn.inbox.clear();
        if conn.read_incoming(false) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "sidecar closed",
            ));
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut SidecarConn) -> bool {
        conn.broken
    }
}
