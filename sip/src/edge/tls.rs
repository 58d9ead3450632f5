//! Outbound SIP over TLS: the connections we open to a trunk's
//! `;transport=tls` termination URI (Twilio's Secure Trunking on 5061).
//!
//! We dial and handshake here rather than let rsipstack do it on the
//! first send: the edge resolves the host itself and sends to an address,
//! while the certificate must be checked against the host name we were
//! given (rsipstack would check the address), under our roots (the
//! system's or `sip.tls.ca`), with a time limit, and a failure must name
//! its reason (an untrusted or misnamed certificate is an operator's
//! problem, not the callee's). A connection that handshook is handed to
//! the stack, which then sends the INVITE and everything after it on it,
//! and kept for the next call to the same address while it lives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rsipstack::transport::tls::TlsConnection;
use rsipstack::transport::{SipAddr, SipConnection, TransportLayer};
use rustls_pki_types::ServerName;

use super::EdgeError;

/// The longest a TCP connect plus TLS handshake may take before the next
/// address is tried (the same 4 s an unanswering UDP address gets).
const CONNECT_LIMIT: Duration = Duration::from_secs(4);

/// Outbound TLS connections by address.
pub(crate) struct TlsFlows {
    /// Whom we trust; replaced on reload (open connections keep theirs).
    client: RwLock<Arc<rustls::ClientConfig>>,
    /// The edge's: stopping it closes them.
    cancel: rsipstack::platform::CancellationToken,
    open: Mutex<HashMap<SocketAddr, SipConnection>>,
}

impl TlsFlows {
    pub(crate) fn new(
        client: Arc<rustls::ClientConfig>,
        cancel: rsipstack::platform::CancellationToken,
    ) -> Self {
        TlsFlows {
            client: RwLock::new(client),
            cancel,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Trusts `client`'s roots for the connections opened from now on.
    pub(crate) fn set_client(&self, client: Arc<rustls::ClientConfig>) {
        match self.client.write() {
            Ok(mut running) => *running = client,
            Err(poisoned) => *poisoned.into_inner() = client,
        }
    }

    /// The first of `addresses` reachable over TLS with a certificate
    /// valid for `name`: one with a live connection (ours, or one the peer
    /// opened to us, as a registered softphone does), else the first that
    /// completes a handshake. Errors name every address's failure.
    pub(crate) async fn reach(
        &self,
        stack: &TransportLayer,
        name: &str,
        addresses: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, EdgeError> {
        let flows = stack.get_addrs();
        let live = |address: &SocketAddr| {
            let target = tls_addr(*address);
            flows.contains(&target)
                || self.open.lock().is_ok_and(|open| {
                    open.get(address)
                        .is_some_and(|c| c.cancel_token().is_none_or(|t| !t.is_cancelled()))
                })
        };
        if let Some(address) = addresses.iter().find(|a| live(a)) {
            return Ok(vec![*address]);
        }
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| EdgeError::BadTarget(format!("{name} is no TLS server name: {e}")))?;
        let mut failures = Vec::new();
        for address in addresses {
            match tokio::time::timeout(CONNECT_LIMIT, self.connect(address, server_name.clone()))
                .await
            {
                Ok(Ok(connection)) => {
                    stack.add_connection(connection.clone());
                    if let Ok(mut open) = self.open.lock() {
                        open.retain(|_, c| c.cancel_token().is_none_or(|t| !t.is_cancelled()));
                        open.insert(address, connection);
                    }
                    return Ok(vec![address]);
                }
                Ok(Err(reason)) => failures.push(format!("{address}: {reason}")),
                Err(_) => failures.push(format!(
                    "{address}: no TLS handshake within {} s",
                    CONNECT_LIMIT.as_secs()
                )),
            }
        }
        Err(EdgeError::Tls(format!(
            "cannot reach {name}: {}",
            failures.join("; ")
        )))
    }

    async fn connect(
        &self,
        address: SocketAddr,
        name: ServerName<'static>,
    ) -> Result<SipConnection, String> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let client = match self.client.read() {
            Ok(client) => client.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let connector = tokio_rustls::TlsConnector::from(client);
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
        let connection = TlsConnection::from_client_stream(
            tls,
            tls_addr(address),
            Some(self.cancel.child_token()),
        )
        .await
        .map_err(|e| format!("cannot use the connection: {e}"))?;
        Ok(SipConnection::Tls(connection))
    }
}

fn tls_addr(address: SocketAddr) -> SipAddr {
    SipAddr {
        r#type: Some(rsipstack::sip::transport::Transport::Tls),
        addr: address.into(),
    }
}
