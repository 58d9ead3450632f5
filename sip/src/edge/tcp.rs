//! SIP over TCP and TLS, framed and checked by us before rsipstack sees a
//! message.
//!
//! Our own accept loop binds the port at start and applies the ACL and the
//! per-source connection limit on accept (a refused connection is closed
//! at once, for both `unknown_source` policies: there is no request yet to
//! answer 403 to). On a `tls:` listener the handshake follows, in a task
//! of its own with a time limit, so a peer that stalls mid-handshake holds
//! nothing but its task and its connection slot. Each accepted stream is
//! read here, cut into messages by
//! Content-Length ([`wire::frame_length`]), and every message goes through
//! the same checks as a datagram ([`Gate::inspect`]): a bad one gets its 400
//! on the connection, a stream that cannot be framed is closed. Messages
//! that pass reach rsipstack through its in-memory channel transport; what
//! it sends back comes out of that channel and is written to the stream,
//! with the top Via of our own requests naming the stream's transport and
//! our listener (the channel transport would otherwise say UDP).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transport::TransportEvent;
use rsipstack::transport::channel::ChannelConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::gate::Verdict;
use crate::wire;

/// A connection with no traffic for this long is closed (rsipstack's own
/// stream transports use the same 300 s).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The longest a peer may take over its TLS handshake.
const HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

use rsipstack::platform::CancellationToken;
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transport::{SipAddr, SipConnection};

use crate::gate::Gate;

/// Open TCP connections per source address: counted up when accepted,
/// down when the stack reports the connection closed. Only connections we
/// accepted count: the stack also reports closing the connections it or
/// the edge dialled (to a peer's listening port), and those must not free
/// a slot of the peer's inbound ones.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConnectionCounts {
    open: Arc<Mutex<OpenConnections>>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    per_source: HashMap<IpAddr, usize>,
    accepted: HashSet<SocketAddr>,
}

impl ConnectionCounts {
    /// Takes a slot for `remote`'s address unless it already has `limit`
    /// open.
    fn try_open(&self, remote: SocketAddr, limit: usize) -> bool {
        let Ok(mut open) = self.open.lock() else {
            return false;
        };
        let count = open.per_source.entry(remote.ip()).or_insert(0);
        if *count >= limit {
            return false;
        }
        *count += 1;
        open.accepted.insert(remote);
        true
    }

    /// Frees `remote`'s slot if it is a connection we accepted.
    fn closed(&self, remote: SocketAddr) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if !open.accepted.remove(&remote) {
            return;
        }
        if let Some(count) = open.per_source.get_mut(&remote.ip()) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_source.remove(&remote.ip());
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
            self.0.closed(source);
        }
        Some(event)
    }
}

/// What a stream listener's connections share.
#[derive(Clone)]
pub(crate) struct StreamEdge {
    pub(crate) endpoint: EndpointInnerRef,
    pub(crate) gate: Arc<Gate>,
    pub(crate) counts: ConnectionCounts,
    /// Open connections allowed per source address.
    pub(crate) limit: usize,
    /// TCP or TLS.
    pub(crate) transport: super::Transport,
    /// Our listener as our requests' top Via names it.
    pub(crate) sent_by: String,
    /// The handshake, on a `tls:` listener.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    edge: StreamEdge,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "sip stream accept failed");
                continue;
            }
        };
        if !edge.gate.admits_connection(remote.ip()) {
            let seen = edge
                .gate
                .stats
                .unknown_source
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if seen.is_power_of_two() {
                tracing::warn!(source = %remote, seen, "sip stream connection from an unknown source closed");
            }
            continue;
        }
        if !edge.counts.try_open(remote, edge.limit) {
            let seen = edge
                .gate
                .stats
                .connection_limit
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if seen.is_power_of_two() {
                tracing::warn!(source = %remote, limit = edge.limit, seen, "sip stream connection over the per-source limit closed");
            }
            continue;
        }
        let token = cancel.child_token();
        let edge = edge.clone();
        tokio::spawn(async move {
            match edge.tls.clone() {
                None => edge.serve(stream, remote, token).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        _ = token.cancelled() => return edge.counts.closed(remote),
                        handshake = tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)) => handshake,
                    };
                    match handshake {
                        Ok(Ok(tls)) => edge.serve(tls, remote, token).await,
                        Ok(Err(e)) => {
                            edge.counts.closed(remote);
                            tracing::info!(source = %remote, error = %e, "sip tls handshake failed; closed");
                        }
                        Err(_) => {
                            edge.counts.closed(remote);
                            tracing::info!(source = %remote, "sip tls handshake took over 10 s; closed");
                        }
                    }
                }
            }
        });
    }
}

impl StreamEdge {
    /// Hands the stream's messages to the stack through a channel
    /// connection and serves it until it ends.
    async fn serve<S>(self, stream: S, remote: SocketAddr, token: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let remote_sip = SipAddr {
            r#type: Some(self.transport.on_stack()),
            addr: remote.into(),
        };
        let (to_stack, from_us) = rsipstack::platform::mpsc::unbounded_channel();
        let (to_us, from_stack) = rsipstack::platform::mpsc::unbounded_channel();
        match ChannelConnection::create_connection(from_us, to_us, remote_sip, Some(token.clone()))
            .await
        {
            Ok(channel) => {
                let connection = SipConnection::Channel(channel);
                self.endpoint
                    .transport_layer
                    .add_connection(connection.clone());
                serve_stream(
                    stream,
                    remote,
                    self.transport,
                    self.sent_by,
                    connection,
                    to_stack,
                    from_stack,
                    self.gate,
                    token,
                )
                .await;
            }
            Err(e) => {
                self.counts.closed(remote);
                tracing::warn!(source = %remote, error = %e, "cannot serve a sip stream connection");
            }
        }
    }
}

/// Reads, frames and checks one stream, and writes what the stack sends
/// on it. Ends when the peer closes, the stream cannot be framed, it idles
/// for [`IDLE_TIMEOUT`], or the edge stops; dropping `to_stack` then ends
/// the stack's side (which reports the connection closed).
#[allow(clippy::too_many_arguments)]
async fn serve_stream<S>(
    stream: S,
    remote: SocketAddr,
    transport: super::Transport,
    via_sent_by: String,
    connection: SipConnection,
    to_stack: rsipstack::transport::connection::TransportSender,
    mut from_stack: rsipstack::transport::connection::TransportReceiver,
    gate: Arc<Gate>,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let protocol = match transport {
        super::Transport::Tls => "TLS",
        _ => "TCP",
    };
    // Bytes we write ourselves (keep-alive answers, the gate's replies).
    let (raw, mut raw_queue) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let write_task = tokio::spawn(async move {
        loop {
            let bytes = tokio::select! {
                event = from_stack.recv() => match event {
                    Some(TransportEvent::Incoming(message, _, _)) => {
                        stream_top_via(message.to_string(), protocol, &via_sent_by).into_bytes()
                    }
                    Some(_) => continue,
                    None => break,
                },
                bytes = raw_queue.recv() => match bytes {
                    Some(bytes) => bytes,
                    None => break,
                },
            };
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let remote_sip = SipAddr {
        r#type: Some(transport.on_stack()),
        addr: remote.into(),
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    let limits = wire::Limits::default();
    'read: loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => break,
            read = tokio::time::timeout(IDLE_TIMEOUT, reader.read(&mut chunk)) => read,
        };
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        loop {
            // RFC 5626 keep-alives: answer a double CRLF, skip stray CRLFs.
            if buffer.starts_with(b"\r\n\r\n") {
                buffer.drain(..4);
                let _ = raw.send(b"\r\n".to_vec());
                continue;
            }
            let leading = buffer
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if leading == buffer.len() {
                break;
            }
            buffer.drain(..leading);
            let frame = match wire::frame_length(&buffer, limits) {
                Ok(Some(length)) => buffer.drain(..length).collect::<Vec<u8>>(),
                Ok(None) => break,
                Err(reason) => {
                    gate.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %remote, reason, "sip tcp stream cannot be framed; closed");
                    break 'read;
                }
            };
            let message = match gate.admit(&frame, remote) {
                Ok((_, message)) => message,
                Err(Verdict::Reply { bytes, .. }) => {
                    // On a stream the reply goes back on the connection.
                    let _ = raw.send(bytes);
                    continue;
                }
                Err(_) => continue,
            };
            let message =
                match SipConnection::update_msg_received(message, remote, transport.on_stack()) {
                    Ok(message) => message,
                    Err(_) => continue,
                };
            if to_stack
                .send(TransportEvent::Incoming(
                    message,
                    connection.clone(),
                    remote_sip.clone(),
                ))
                .is_err()
            {
                break 'read;
            }
        }
    }
    drop(to_stack);
    cancel.cancel();
    write_task.abort();
}

/// Rewrites the top Via of a request we send on a stream to name its
/// `protocol` (`TCP`, `TLS`) and our listener; responses and other lines
/// pass unchanged.
fn stream_top_via(text: String, protocol: &str, sent_by: &str) -> String {
    // Responses, the usual case, go out as they are, without a copy.
    if text.starts_with("SIP/2.0 ") {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut done = false;
    for line in text.split_inclusive("\r\n") {
        let is_via = line.starts_with("Via:") || line.starts_with("v:");
        if !done && is_via {
            done = true;
            if let Some((_, rest)) = line.split_once(';') {
                out.push_str("Via: SIP/2.0/");
                out.push_str(protocol);
                out.push(' ');
                out.push_str(sent_by);
                out.push(';');
                out.push_str(rest);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ConnectionCounts, stream_top_via};

    #[test]
    fn closing_a_connection_we_dialled_frees_no_inbound_slot() {
        let counts = ConnectionCounts::default();
        let inbound = "192.0.2.7:40312".parse().unwrap();
        assert!(counts.try_open(inbound, 1));
        assert!(!counts.try_open("192.0.2.7:40313".parse().unwrap(), 1));
        // The same peer's listening port: a connection we dialled to it.
        counts.closed("192.0.2.7:5061".parse().unwrap());
        assert!(!counts.try_open("192.0.2.7:40314".parse().unwrap(), 1));
        counts.closed(inbound);
        assert!(counts.try_open("192.0.2.7:40315".parse().unwrap(), 1));
        // A second close of the same connection frees nothing more.
        counts.closed(inbound);
        assert!(!counts.try_open("192.0.2.7:40316".parse().unwrap(), 1));
    }

    #[test]
    fn our_requests_on_a_stream_name_its_transport_in_their_top_via() {
        let bye = "BYE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=x\r\nCSeq: 2 BYE\r\n\r\n";
        assert_eq!(
            stream_top_via(bye.to_owned(), "TCP", "127.0.0.1:5070"),
            "BYE sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=x\r\nCSeq: 2 BYE\r\n\r\n"
        );
        assert_eq!(
            stream_top_via(bye.to_owned(), "TLS", "192.0.2.1:5061"),
            "BYE sip:a@h SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=x\r\nCSeq: 2 BYE\r\n\r\n"
        );
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=x\r\n\r\n";
        assert_eq!(stream_top_via(ok.to_owned(), "TLS", "127.0.0.1:5070"), ok);
    }
}
