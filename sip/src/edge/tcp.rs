//! SIP over TCP: our own accept loop, so the bound port is known at start
//! and the ACL is applied before a connection is handed to rsipstack.
//!
//! The gate's message checks cannot run on TCP yet: rsipstack frames and
//! parses the stream itself. A connection from a source no trunk allows is
//! closed at once (for both `unknown_source` policies: there is no request
//! to answer 403 to until the stack has parsed one).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rsipstack::platform::CancellationToken;
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::{SipAddr, SipConnection};

use crate::gate::Gate;

pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    endpoint: EndpointInnerRef,
    gate: Arc<Gate>,
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
        match TcpConnection::from_stream(stream, local.clone(), Some(cancel.child_token())) {
            Ok(connection) => endpoint
                .transport_layer
                .add_connection(SipConnection::Tcp(connection)),
            Err(e) => tracing::warn!(source = %remote, error = %e, "cannot serve a tcp connection"),
        }
    }
}
