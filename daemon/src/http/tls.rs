//! HTTPS on the API listener (`[http.tls]`), so Stripe's webhooks reach
//! the daemon without a proxy in front.
//!
//! HTTP/1.1 by ALPN, with the certificate from [`crate::tls`]'s store
//! (re-read on reload). Handshakes run in tasks of their own with a time
//! limit, so a client that stalls mid-handshake holds nothing but its task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::tls::{Certificates, server_config};

/// The longest a client may take over its handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the backlog.
const HANDSHAKES_AT_ONCE: usize = 256;

/// An HTTPS listener for `axum::serve`: connections come out of it with
/// their handshake done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `listener` with the certificate from `certificates`.
    pub fn new(
        listener: TcpListener,
        certificates: Arc<Certificates>,
    ) -> Result<TlsListener, rustls::Error> {
        let local = listener
            .local_addr()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let acceptor = TlsAcceptor::from(server_config(certificates, &[b"http/1.1"])?);
        let (sender, ready) = mpsc::channel(64);
        tokio::spawn(handshakes(listener, acceptor, sender));
        Ok(TlsListener { ready, local })
    }
}

/// Accepts TCP connections and runs each handshake in a task of its own.
async fn handshakes(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "https: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "https: handshake failed"),
                Err(_) => tracing::debug!(%peer, "https: handshake took over 10 s; closed"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The handshake task only stops with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
