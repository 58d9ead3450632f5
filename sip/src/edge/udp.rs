//! A UDP socket that lets only what the [`Gate`] passes reach rsipstack.
//!
//! rsipstack reads datagrams through its `platform::net::UdpSocket` trait;
//! this implementation of it runs every datagram through the gate first
//! and carries out the verdict (answer 400/403/503 itself, or drop), so the
//! stack above never sees a message we have not checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rsipstack::platform::net::UdpSocket as StackUdpSocket;

use crate::gate::{DropReason, Gate, Verdict};

/// The largest UDP payload: datagrams are read whole so the gate judges
/// what was sent, not what fitted in the stack's buffer.
const MAX_DATAGRAM: usize = 65_535;

/// A tokio UDP socket behind the gate.
pub(crate) struct GuardedUdpSocket {
    socket: tokio::net::UdpSocket,
    gate: Arc<Gate>,
    /// Only the stack's one receive loop reads, so this lock is never
    /// contended; it exists because the trait takes `&self`.
    buffer: tokio::sync::Mutex<Vec<u8>>,
}

impl GuardedUdpSocket {
    pub(crate) fn new(socket: tokio::net::UdpSocket, gate: Arc<Gate>) -> Self {
        GuardedUdpSocket {
            socket,
            gate,
            buffer: tokio::sync::Mutex::new(vec![0; MAX_DATAGRAM]),
        }
    }
}

/// Logs a turned-away datagram at most on the 1st, 2nd, 4th, 8th, ... time
/// of its kind, so a flood cannot flood the log.
fn log_turned_away(gate: &Gate, reason: DropReason, source: SocketAddr) {
    let counter = match reason {
        DropReason::UnknownSource => &gate.stats.unknown_source,
        DropReason::Malformed(_) => &gate.stats.malformed,
        DropReason::RateLimited => &gate.stats.rate_limited,
        DropReason::UnknownMethod => &gate.stats.unknown_method,
    };
    let seen = counter.load(Ordering::Relaxed);
    if seen.is_power_of_two() {
        tracing::warn!(%source, ?reason, seen, "sip datagram turned away");
    }
}

#[async_trait::async_trait]
impl StackUdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let mut own = self.buffer.lock().await;
        loop {
            let (len, source) = self.socket.recv_from(&mut own[..]).await?;
            let datagram = &own[..len];
            // CRLF keep-alives (RFC 5626) are for the stack to answer.
            let keepalive = datagram.iter().all(|b| b.is_ascii_whitespace());
            if keepalive && len <= buf.len() {
                buf[..len].copy_from_slice(datagram);
                return Ok((len, source));
            }
            match self.gate.inspect(datagram, source) {
                // The gate's size limit is below the stack's buffer size.
                Verdict::Pass { .. } if len <= buf.len() => {
                    buf[..len].copy_from_slice(datagram);
                    return Ok((len, source));
                }
                Verdict::Pass { .. } => {
                    tracing::warn!(%source, len, "sip datagram larger than the stack's buffer dropped");
                }
                Verdict::Reply {
                    bytes,
                    target,
                    reason,
                } => {
                    log_turned_away(&self.gate, reason, source);
                    if let Err(e) = self.socket.send_to(&bytes, target).await {
                        tracing::debug!(%target, error = %e, "cannot send a gate reply");
                    }
                }
                Verdict::Drop(reason) => log_turned_away(&self.gate, reason, source),
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}
