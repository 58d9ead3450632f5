//! SIP over TCP, framed and checked by us before rsipstack sees a message.
//!
//! Our own accept loop binds the port at start and applies the ACL and the
//! per-source connection limit on accept (a refused connection is closed
//! at once, for both `unknown_source` policies: there is no request yet to
//! answer 403 to). Each accepted stream is read here, cut into messages by
//! Content-Length ([`wire::frame_length`]), and every message goes through
//! the same checks as a datagram ([`Gate::inspect`]): a bad one gets its 400
//! on the connection, a stream that cannot be framed is closed. Messages
//! that pass reach rsipstack through its in-memory channel transport; what
//! it sends back comes out of that channel and is written to the stream,
//! with the top Via of our own requests naming TCP and our TCP listener
//! (the channel transport would otherwise say UDP).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transport::TransportEvent;
use rsipstack::transport::channel::ChannelConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::gate::Verdict;
use crate::wire;

/// A connection with no traffic for this long is closed (rsipstack's own
/// stream transports use the same 300 s).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

use rsipstack::platform::CancellationToken;
use rsipstack::transaction::endpoint::EndpointInnerRef;
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
    sent_by: String,
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
                tracing::warn!(error = %e, "tcp accept failed");
                continue;
            }
        };
        if !gate.admits_connection(remote.ip()) {
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
        let remote_sip = SipAddr {
            r#type: Some(rsipstack::sip::transport::Transport::Tcp),
            addr: remote.into(),
        };
        let (to_stack, from_us) = tokio::sync::mpsc::unbounded_channel();
        let (to_us, from_stack) = tokio::sync::mpsc::unbounded_channel();
        let token = cancel.child_token();
        match ChannelConnection::create_connection(
            from_us,
            to_us,
            remote_sip.clone(),
            Some(token.clone()),
        )
        .await
        {
            Ok(channel) => {
                let connection = SipConnection::Channel(channel);
                endpoint.transport_layer.add_connection(connection.clone());
                tokio::spawn(serve_stream(
                    stream,
                    remote,
                    sent_by.clone(),
                    connection,
                    to_stack,
                    from_stack,
                    gate.clone(),
                    token,
                ));
            }
            Err(e) => {
                counts.closed(remote.ip());
                tracing::warn!(source = %remote, error = %e, "cannot serve a tcp connection");
            }
        }
    }
}

/// Reads, frames and checks one TCP stream, and writes what the stack sends
/// on it. Ends when the peer closes, the stream cannot be framed, it idles
/// for [`IDLE_TIMEOUT`], or the edge stops; dropping `to_stack` then ends
/// the stack's side (which reports the connection closed).
#[allow(clippy::too_many_arguments)]
async fn serve_stream(
    stream: tokio::net::TcpStream,
    remote: std::net::SocketAddr,
    via_sent_by: String,
    connection: SipConnection,
    to_stack: rsipstack::transport::connection::TransportSender,
    mut from_stack: rsipstack::transport::connection::TransportReceiver,
    gate: Arc<Gate>,
    cancel: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    // Bytes we write ourselves (keep-alive answers, the gate's replies).
    let (raw, mut raw_queue) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let write_task = tokio::spawn(async move {
        loop {
            let bytes = tokio::select! {
                event = from_stack.recv() => match event {
                    Some(TransportEvent::Incoming(message, _, _)) => {
                        tcp_top_via(message.to_string(), &via_sent_by).into_bytes()
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
        r#type: Some(rsipstack::sip::transport::Transport::Tcp),
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
            let message = match SipConnection::update_msg_received(
                message,
                remote,
                rsipstack::sip::transport::Transport::Tcp,
            ) {
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

/// Rewrites the top Via of a request we send on a TCP stream to name TCP
/// and our listener; responses and other lines pass unchanged.
fn tcp_top_via(text: String, sent_by: &str) -> String {
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
                out.push_str("Via: SIP/2.0/TCP ");
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
    use super::tcp_top_via;

    #[test]
    fn our_requests_on_a_stream_name_tcp_in_their_top_via() {
        let bye = "BYE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=x\r\nCSeq: 2 BYE\r\n\r\n";
        assert_eq!(
            tcp_top_via(bye.to_owned(), "127.0.0.1:5070"),
            "BYE sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1;rport\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=x\r\nCSeq: 2 BYE\r\n\r\n"
        );
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=x\r\n\r\n";
        assert_eq!(tcp_top_via(ok.to_owned(), "127.0.0.1:5070"), ok);
    }
}
