//! SIP over TCP: our own accept loop, so the bound port is known at start
//! and the ACL is applied before a connection is handed to rsipstack.
//!
//! The gate's message checks cannot run on TCP yet: rsipstack frames and
//! parses the stream itself. A connection from a source no trunk allows is
//! closed at once (for both `unknown_source` policies: there is no request
//! to answer 403 to until the stack has parsed one), and so is one beyond
//! the per-source connection limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transport::TransportEvent;

use rsipstack::platform::CancellationToken;
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::{SipAddr, SipConnection};

use crate::gate::Gate;

/// Open TCP connections per source address: counted up when accepted,
/// down when the stack reports the connection closed.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConnectionCounts {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionCounts {
    /// Takes a slot for `source` unless it already has `limit` open.
    fn try_open(&self, source: IpAddr, limit: usize) -> bool {
        let Ok(mut open) = self.open.lock() else {
            return false;
        };
        let count = open.entry(source).or_insert(0);
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    fn closed(&self, source: IpAddr) {
        if let Ok(mut open) = self.open.lock()
            && let Some(count) = open.get_mut(&source)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&source);
            }
        }
    }
}

/// Watches the stack's transport events for closed TCP connections.
pub(crate) struct ClosedConnections(pub(crate) ConnectionCounts);

#[async_trait::async_trait]
impl TransportEventInspector for ClosedConnections {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        if let TransportEvent::Closed(connection) = &event
            && connection.is_reliable()
            && let Some(source) = connection
                .get_remote_addr()
                .and_then(|a| a.get_socketaddr().ok())
        {
            self.0.closed(source.ip());
        }
        Some(event)
    }
}

pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    endpoint: EndpointInnerRef,
    gate: Arc<Gate>,
    counts: ConnectionCounts,
    limit: usize,
    cancel: CancellationToken,
) {
    let local = match listener.local_addr() {
        Ok(local) => SipAddr {
            r#type: Some(rsipstack::sip::transport::Transport::Tcp),
            addr: local.into(),
        },
        Err(e) => {
            tracing::error!(error = %e, "tcp listener has no address");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                continue;
            }
        };
        if gate.trunk_for(remote.ip()).is_none() {
            let seen = gate.stats.unknown_source.fetch_add(1, Ordering::Relaxed) + 1;
            if seen.is_power_of_two() {
                tracing::warn!(source = %remote, seen, "sip tcp connection from an unknown source closed");
            }
            continue;
        }
        if !counts.try_open(remote.ip(), limit) {
            let seen = gate.stats.connection_limit.fetch_add(1, Ordering::Relaxed) + 1;
            if seen.is_power_of_two() {
                tracing::warn!(source = %remote, limit, seen, "sip tcp connection over the per-source limit closed");
            }
            continue;
        }
        match TcpConnection::from_stream(stream, local.clone(), Some(cancel.child_token())) {
            Ok(connection) => endpoint
                .transport_layer
                .add_connection(SipConnection::Tcp(connection)),
            Err(e) => {
                counts.closed(remote.ip());
                tracing::warn!(source = %remote, error = %e, "cannot serve a tcp connection");
            }
        }
    }
}
