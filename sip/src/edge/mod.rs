//! The running SIP edge: listeners, the rsipstack endpoint behind the
//! gate, and the loop that turns incoming transactions into answers or
//! [`InboundCall`]s for the daemon.
//!
//! What the edge answers by itself, without the daemon:
//! - `OPTIONS` → 200 with `Allow` and `Accept: application/sdp`, or 503
//!   while draining or while the daemon says it cannot take calls (its
//!   ledger is unreachable), so a dispatcher's probe takes the node out of
//!   rotation;
//! - `INVITE` → `100 Trying` at once (before the daemon looks anything up),
//!   or 503 in those same states, so the trunk fails over;
//! - ACK, CANCEL, BYE and re-INVITEs of known dialogs → the dialog layer;
//!   BYE/CANCEL for unknown dialogs → 481;
//! - REGISTER → the daemon's registrar, when `registrar.allow` is set
//!   ([`RegisterRequest`]); 405 otherwise;
//! - anything else → 405 with `Allow`.

mod dialog_record;
mod dispatch;
use dispatch::{Dispatcher, Refusal};
mod fork;
mod inbound;
mod keepalive;
mod leg;
mod nat;
mod outbound;
mod register;
mod tcp;
mod tls;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::platform::CancellationToken;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::TransportLayer;
use rsipstack::transport::udp::UdpConnection;
use tokio::sync::mpsc;

pub use dialog_record::{ByeOutcome, DialogRecord, DialogRole};
pub use fork::best_final;
pub use inbound::{InboundCall, InboundLeg, LegEvent, Reoffer};
pub use outbound::{OutboundEvent, OutboundLeg, OutboundRequest, twilio_error_for_operator};
pub use register::{BadContact, ContactBinding, RegisterContacts, RegisterRequest};

use crate::gate::{Gate, GateRules, allow};

/// How many new calls may wait for the daemon before the edge answers 503.
const PENDING_CALLS: usize = 256;

/// How many REGISTERs may wait for the registrar before the edge answers
/// 503 (a reboot of an office full of phones comes at once).
const PENDING_REGISTERS: usize = 1024;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (1.2 or 1.3).
    Tls,
}

impl Transport {
    /// The stack's name for it.
    pub(crate) fn on_stack(self) -> rsipstack::sip::transport::Transport {
        match self {
            Transport::Udp => rsipstack::sip::transport::Transport::Udp,
            Transport::Tcp => rsipstack::sip::transport::Transport::Tcp,
            Transport::Tls => rsipstack::sip::transport::Transport::Tls,
        }
    }

    /// The transport a message came over or a transaction uses.
    pub(crate) fn of(connection: Option<&rsipstack::transport::SipConnection>) -> Transport {
        match connection {
            Some(connection)
                if connection.get_addr().r#type
                    == Some(rsipstack::sip::transport::Transport::Tls) =>
            {
                Transport::Tls
            }
            Some(connection) if connection.is_reliable() => Transport::Tcp,
            _ => Transport::Udp,
        }
    }
}

/// One listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// UDP, TCP or TLS.
    pub transport: Transport,
    /// Where to bind; port 0 picks a free one.
    pub addr: SocketAddr,
}

/// Everything the edge needs to start.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where to listen.
    pub listen: Vec<Listener>,
    /// The host (and port) written in our Contact; `None` uses the first
    /// listener's address.
    pub public_host: Option<(String, Option<u16>)>,
    /// Who may talk to us and what the others get.
    pub rules: GateRules,
    /// New INVITEs per second per source.
    pub invites_per_second: NonZeroU32,
    /// Open TCP connections per source address.
    pub tcp_connections_per_source: usize,
    /// Our `User-Agent` / `Server` string.
    pub user_agent: String,
    /// Whether REGISTER goes to the daemon's registrar (taken with
    /// [`SipEdge::take_registers`]); 405 otherwise.
    pub registrar: bool,
    /// What `tls:` listeners serve (the daemon's certificate store, so a
    /// reload reaches new handshakes); required with one.
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// Whom outbound TLS trusts (the system's roots or `sip.tls.ca`); the
    /// peer's certificate must also name the host we dial.
    pub tls_client: Arc<rustls::ClientConfig>,
}

/// Why the edge could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A listener could not be bound.
    #[error("cannot listen on {transport:?} {addr}: {source}")]
    Bind {
        /// The transport.
        transport: Transport,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// rsipstack refused to set something up.
    #[error("sip stack: {0}")]
    Stack(String),
    /// A dialog operation failed.
    #[error("sip dialog: {0}")]
    Dialog(String),
    /// An outbound target could not be parsed or resolved.
    #[error("bad call target: {0}")]
    BadTarget(String),
    /// No resolved address of an outbound target answered.
    #[error("call target unreachable: {0}")]
    Unreachable(String),
    /// The trunk's calls-per-second queue was full for too long.
    #[error("trunk {0}: calls-per-second limit reached, call not placed")]
    CpsQueueFull(String),
    /// No TLS connection could be made to any address of the target (its
    /// certificate not trusted, not for the host we dialled, no answer).
    #[error("TLS: {0}")]
    Tls(String),
}

/// A running SIP edge. Dropping it does not stop it; call [`SipEdge::stop`].
pub struct SipEdge {
    gate: Arc<Gate>,
    dialogs: Arc<DialogLayer>,
    contacts: Contacts,
    public_host: String,
    cps: outbound::CpsLimiters,
    refusal: Arc<Refusal>,
    cancel: CancellationToken,
    bound: Vec<Listener>,
    registers: std::sync::Mutex<Option<mpsc::Receiver<RegisterRequest>>>,
    /// Where registered devices behind NAT are reached.
    nat: nat::NatTargets,
    /// Outbound TLS connections we opened, reused while they live.
    tls_flows: tls::TlsFlows,
}

impl SipEdge {
    /// The REGISTERs for the daemon's registrar, once (`None` after the
    /// first call, or when the edge has no registrar).
    pub fn take_registers(&self) -> Option<mpsc::Receiver<RegisterRequest>> {
        self.registers.lock().ok()?.take()
    }

    /// Binds every listener and starts serving. New calls arrive on the
    /// returned receiver.
    pub async fn start(
        config: EdgeConfig,
    ) -> Result<(SipEdge, mpsc::Receiver<InboundCall>), EdgeError> {
        let cancel = CancellationToken::new();
        let gate = Arc::new(Gate::new(config.rules.clone(), config.invites_per_second));
        let transport_layer = TransportLayer::new(cancel.clone());
        let external_ip = config
            .public_host
            .as_ref()
            .and_then(|(host, _)| host.parse::<IpAddr>().ok());

        let mut bound = Vec::new();
        let mut stream_listeners = Vec::new();
        for listener in &config.listen {
            let bind_error = |source| EdgeError::Bind {
                transport: listener.transport,
                addr: listener.addr,
                source,
            };
            match listener.transport {
                Transport::Udp => {
                    let socket = tokio::net::UdpSocket::bind(listener.addr)
                        .await
                        .map_err(bind_error)?;
                    let local = socket.local_addr().map_err(bind_error)?;
                    let external =
                        external_ip.map(|ip| SocketAddr::new(ip, public_port(&config, local)));
                    let guarded = Arc::new(udp::GuardedUdpSocket::new(socket, gate.clone()));
                    let connection =
                        UdpConnection::from_socket(guarded, external, Some(cancel.child_token()))
                            .await
                            .map_err(|e| EdgeError::Stack(e.to_string()))?;
                    transport_layer.add_transport(connection.into());
                    bound.push(Listener {
                        transport: Transport::Udp,
                        addr: local,
                    });
                }
                Transport::Tcp | Transport::Tls => {
                    let acceptor = match listener.transport {
                        Transport::Tls => Some(tokio_rustls::TlsAcceptor::from(
                            config.tls_server.clone().ok_or_else(|| {
                                EdgeError::Stack(format!(
                                    "the tls listener on {} has no certificate",
                                    listener.addr
                                ))
                            })?,
                        )),
                        _ => None,
                    };
                    let socket = tokio::net::TcpListener::bind(listener.addr)
                        .await
                        .map_err(bind_error)?;
                    let local = socket.local_addr().map_err(bind_error)?;
                    bound.push(Listener {
                        transport: listener.transport,
                        addr: local,
                    });
                    stream_listeners.push((socket, listener.transport, acceptor));
                }
            }
        }

        let connection_counts = tcp::ConnectionCounts::default();
        let nat = nat::NatTargets::default();
        let endpoint = Arc::new(
            EndpointBuilder::new()
                .with_transport_inspector(Box::new(tcp::ClosedConnections(
                    connection_counts.clone(),
                )))
                .with_target_locator(Box::new(nat.clone()))
                .with_cancel_token(cancel.clone())
                .with_transport_layer(transport_layer)
                .with_user_agent(&config.user_agent)
                .with_allows(
                    [
                        Method::Invite,
                        Method::Ack,
                        Method::Bye,
                        Method::Cancel,
                        Method::Options,
                    ]
                    .into_iter()
                    .chain(config.registrar.then_some(Method::Register))
                    .collect(),
                )
                .build(),
        );
        let first = bound
            .first()
            .ok_or_else(|| EdgeError::Stack("no SIP listener configured".to_owned()))?;
        let contacts = Contacts {
            first: contact_uri(&config, first)?,
            udp: bound
                .iter()
                .find(|l| l.transport == Transport::Udp)
                .map(|l| contact_uri(&config, l))
                .transpose()?,
            tcp: bound
                .iter()
                .find(|l| l.transport == Transport::Tcp)
                .map(|l| contact_uri(&config, l))
                .transpose()?,
            tls: bound
                .iter()
                .find(|l| l.transport == Transport::Tls)
                .map(|l| contact_uri(&config, l))
                .transpose()?,
        };
        for (listener, transport, acceptor) in stream_listeners {
            tokio::spawn(tcp::accept_loop(
                listener,
                tcp::StreamEdge {
                    endpoint: endpoint.inner.clone(),
                    gate: gate.clone(),
                    counts: connection_counts.clone(),
                    limit: config.tcp_connections_per_source,
                    transport,
                    sent_by: contacts.for_transport(transport).host_with_port.to_string(),
                    tls: acceptor,
                },
                cancel.clone(),
            ));
        }
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| EdgeError::Stack(e.to_string()))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let refusal = Arc::new(Refusal::default());
        let (calls, receiver) = mpsc::channel(PENDING_CALLS);
        let (registers, register_receiver) = if config.registrar {
            let (sender, receiver) = mpsc::channel(PENDING_REGISTERS);
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };

        let serve_endpoint = endpoint.clone();
        tokio::spawn(async move { serve_endpoint.serve().await });
        let public_host = match &config.public_host {
            Some((host, _)) => host.clone(),
            None => bound
                .first()
                .map(|l| l.addr.ip().to_string())
                .unwrap_or_default(),
        };
        tokio::spawn(
            Dispatcher {
                gate: gate.clone(),
                dialogs: dialogs.clone(),
                contacts: contacts.clone(),
                refusal: refusal.clone(),
                calls,
                registers,
            }
            .run(incoming),
        );
        let forget = gate.clone();
        let forget_cancel = cancel.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = forget_cancel.cancelled() => return,
                    _ = every.tick() => forget.forget_idle_sources(),
                }
            }
        });
        let tls_flows = tls::TlsFlows::new(config.tls_client.clone(), cancel.clone());
        Ok((
            SipEdge {
                gate,
                dialogs,
                contacts,
                public_host,
                cps: outbound::CpsLimiters::default(),
                refusal,
                cancel,
                bound,
                registers: std::sync::Mutex::new(register_receiver),
                nat,
                tls_flows,
            },
            receiver,
        ))
    }

    /// Places a call (see [`OutboundRequest`]) to the addresses its host
    /// resolves to; returns once one of them has answered anything, with the
    /// leg to follow it.
    pub async fn place_call(&self, request: OutboundRequest) -> Result<OutboundLeg, EdgeError> {
        let transport = self.transport_for(&request)?;
        let addresses = outbound::resolve(&request, transport, &self.bound).await?;
        self.place_on(request, transport, addresses).await
    }

    /// UDP, or a stream when the INVITE would not fit a datagram.
    fn transport_for(&self, request: &OutboundRequest) -> Result<Transport, EdgeError> {
        outbound::transport_for(
            &self.dialogs,
            self.contacts.for_transport(Transport::Udp),
            &self.public_host,
            request,
        )
    }

    /// Places a call to these addresses in this order, keeping the
    /// Request-URI's host as written (what DNS gave, or a fixed list).
    pub async fn place_call_to(
        &self,
        request: OutboundRequest,
        addresses: Vec<SocketAddr>,
    ) -> Result<OutboundLeg, EdgeError> {
        let transport = self.transport_for(&request)?;
        self.place_on(request, transport, addresses).await
    }

    async fn place_on(
        &self,
        request: OutboundRequest,
        transport: Transport,
        addresses: Vec<SocketAddr>,
    ) -> Result<OutboundLeg, EdgeError> {
        let addresses = if transport == Transport::Tls {
            let name = outbound::target_host(&request)?;
            self.tls_flows
                .reach(&self.dialogs.endpoint.transport_layer, &name, addresses)
                .await?
        } else {
            addresses
        };
        outbound::place(
            &self.dialogs,
            self.contacts.for_transport(transport),
            &self.public_host,
            &self.cps,
            transport,
            addresses,
            request,
        )
        .await
    }

    /// Ends a dialog stored by a process that is gone: BYE to its remote
    /// target through its route set, as the live leg would have sent it.
    /// The dialog is registered only while the BYE is under way.
    ///
    /// A hop over TLS is connected here first, its certificate checked
    /// under our roots against the name [`DialogRecord::tls_hop`] gives;
    /// rsipstack would dial it itself trusting nothing. A hop we cannot
    /// reach so is not answered, and the outcome says why.
    pub async fn end_recorded(&self, record: &DialogRecord) -> Result<ByeOutcome, EdgeError> {
        let snapshot = record.snapshot()?;
        if let Some(hop) = record.tls_hop(&snapshot)?
            && let Err(e) = self.reach_tls_hop(&hop).await
        {
            return Ok(ByeOutcome::Unanswered(e.to_string()));
        }
        let id = snapshot.id.clone();
        let (states, _receiver) = self.dialogs.new_dialog_state_channel();
        self.dialogs
            .restore_from_snapshot(snapshot, states)
            .map_err(|e| EdgeError::Dialog(e.to_string()))?;
        let outcome = match self.dialogs.get_dialog(&id) {
            Some(rsipstack::dialog::dialog::Dialog::Invite(dialog)) => {
                match dialog.request(Method::Bye, None, None).await {
                    Ok(Some(response)) => ByeOutcome::Answered(response.status_code.code()),
                    Ok(None) => ByeOutcome::Unanswered("no final response".into()),
                    Err(e) => ByeOutcome::Unanswered(e.to_string()),
                }
            }
            // Already known: a live leg of this process owns it.
            _ => ByeOutcome::Unanswered("the dialog is live in this process".into()),
        };
        self.dialogs.remove_dialog(&id);
        Ok(outcome)
    }

    /// Opens (or finds) a verified TLS connection to a stored dialog's
    /// next hop, for the stack to send on.
    async fn reach_tls_hop(&self, hop: &dialog_record::TlsHop) -> Result<(), EdgeError> {
        let mut addresses =
            outbound::resolve_host(&hop.host, hop.port, Transport::Tls, &self.bound).await?;
        // The stack resolves a name IPv4 first and sends to the first
        // address: the connection must be to that one.
        addresses.sort_by_key(|address| !address.is_ipv4());
        self.tls_flows
            .reach(&self.dialogs.endpoint.transport_layer, &hop.name, addresses)
            .await
            .map(|_| ())
    }

    /// Dialogs the stack keeps: two per call in progress, zero when idle
    /// (one that stays is memory that never comes back).
    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }

    /// The listeners as bound (real ports when 0 was asked for).
    pub fn listeners(&self) -> &[Listener] {
        &self.bound
    }

    /// From now on new INVITEs get 503 (so the trunk fails over); calls in
    /// progress continue.
    pub fn start_draining(&self) {
        self.refusal.draining.store(true, Ordering::SeqCst);
    }

    /// While `unavailable`, new INVITEs and OPTIONS get 503 as when
    /// draining (the daemon cannot take calls: its ledger is out of
    /// reach); calls in progress continue. Reversible, unlike draining.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.refusal
            .unavailable
            .store(unavailable, Ordering::SeqCst);
    }

    /// Replaces whom outbound TLS trusts (config reload): connections
    /// opened from now on check their peer against `client`'s roots;
    /// connections already open go on.
    pub fn set_tls_client(&self, client: Arc<rustls::ClientConfig>) {
        self.tls_flows.set_client(client);
    }

    /// Replaces the gate's rules (config reload).
    pub fn set_rules(&self, rules: GateRules) {
        self.gate.set_rules(rules);
    }

    /// What the gate has turned away so far.
    pub fn gate_stats(&self) -> &crate::gate::GateStats {
        &self.gate.stats
    }

    /// Stops every listener and task.
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

fn public_port(config: &EdgeConfig, local: SocketAddr) -> u16 {
    config
        .public_host
        .as_ref()
        .and_then(|(_, port)| *port)
        .unwrap_or(local.port())
}

/// Our Contact per transport: peers send in-dialog requests to it.
#[derive(Debug, Clone)]
struct Contacts {
    /// The first listener's, used when we do not listen on a transport.
    first: rsipstack::sip::Uri,
    udp: Option<rsipstack::sip::Uri>,
    tcp: Option<rsipstack::sip::Uri>,
    tls: Option<rsipstack::sip::Uri>,
}

impl Contacts {
    fn for_transport(&self, transport: Transport) -> &rsipstack::sip::Uri {
        let specific = match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
            Transport::Tls => &self.tls,
        };
        specific.as_ref().unwrap_or(&self.first)
    }
}

/// `sip:HOST:PORT` (with `;transport=tcp` or `;transport=tls` for the
/// streams: Twilio does not use `sips:`) for `listener`, with
/// `sip.public_address` as host (and port) when set.
fn contact_uri(config: &EdgeConfig, listener: &Listener) -> Result<rsipstack::sip::Uri, EdgeError> {
    let host_port = match &config.public_host {
        Some((host, port)) => {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            format!("{host}:{}", port.unwrap_or(listener.addr.port()))
        }
        None => listener.addr.to_string(),
    };
    let suffix = match listener.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
    };
    let text = format!("sip:{host_port}{suffix}");
    rsipstack::sip::Uri::try_from(text.as_str())
        .map_err(|e| EdgeError::Stack(format!("contact {text}: {e}")))
}

/// The user part of a URI in a header value such as `<sip:+8190@host>;tag=1`.
fn user_part(value: &str) -> Option<String> {
    let uri = value
        .split_once('<')
        .map_or(value, |(_, rest)| rest.split('>').next().unwrap_or(rest));
    let after_scheme = uri.split_once(':')?.1;
    let (user, _) = after_scheme.split_once('@')?;
    let user = user.split(';').next().unwrap_or(user);
    (!user.is_empty()).then(|| user.to_owned())
}

/// Every value of header `name`, in order.
pub(crate) fn header_values(headers: &rsipstack::sip::Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter_map(|header| {
            let text = header.to_string();
            let (key, value) = text.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
        .collect()
}

/// The value of the first header called `name` (any case), from its
/// wire form.
pub(crate) fn header_value(headers: &rsipstack::sip::Headers, name: &str) -> Option<String> {
    headers.iter().find_map(|header| {
        let text = header.to_string();
        let (key, value) = text.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parts() {
        assert_eq!(
            user_part("<sip:+819012345678@acme.pstn.twilio.com>;tag=1").as_deref(),
            Some("+819012345678")
        );
        assert_eq!(
            user_part("\"Anon\" <sip:anonymous@anonymous.invalid>").as_deref(),
            Some("anonymous")
        );
        assert_eq!(
            user_part("sip:+1555@host;user=phone").as_deref(),
            Some("+1555")
        );
        assert_eq!(user_part("<sip:host.example.com>"), None);
        assert_eq!(user_part("garbage"), None);
    }
}
