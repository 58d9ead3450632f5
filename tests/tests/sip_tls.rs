//! SIP over TLS at the edge, in-process, against rustls peers the test
//! runs on 127.0.0.1 with a certificate authority it makes (rcgen): a call
//! arriving over TLS is answered and ended on its connection with our
//! Contact and Via naming TLS; bad input over TLS gets 400; a peer that
//! does not speak TLS is closed; an outbound call to a `;transport=tls`
//! URI checks the peer's certificate against our roots and the host name
//! we dialled, and says so when it fails; a dialog stored by a process
//! that is gone is ended over a TLS connection checked the same way.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollbridge_e2e::edge::{lab_edge_config, listener};
use tollbridge_e2e::tls::TestCa;
use tollbridge_sip::edge::{
    ByeOutcome, DialogRecord, DialogRole, EdgeConfig, EdgeError, InboundCall, OutboundEvent,
    OutboundRequest, SipEdge, Transport,
};
use tollbridge_sip::gate::UnknownSourcePolicy;

const SDP: &str = "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

struct Harness {
    edge: SipEdge,
    tls: SocketAddr,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

async fn start_edge() -> (Harness, tokio::sync::mpsc::Receiver<InboundCall>) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let ours = ca.issue("edge", &["localhost", "127.0.0.1"]);
    let config = EdgeConfig {
        tls_server: Some(ca.server(&ours)),
        tls_client: ca.client(),
        ..lab_edge_config(&[Transport::Udp, Transport::Tls], UnknownSourcePolicy::Drop)
    };
    let (edge, calls) = SipEdge::start(config).await.expect("edge starts");
    let tls = listener(&edge, Transport::Tls);
    (
        Harness {
            edge,
            tls,
            ca,
            _dir: dir,
        },
        calls,
    )
}

/// A TLS connection to `address` checking the certificate names `name`.
async fn connect(
    client: Arc<rustls::ClientConfig>,
    address: SocketAddr,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let stream = TcpStream::connect(address).await.unwrap();
    tokio_rustls::TlsConnector::from(client)
        .connect(
            rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap(),
            stream,
        )
        .await
        .expect("tls handshake")
}

/// The next SIP message on a stream (head and Content-Length body).
async fn read_message<S: AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>) -> String {
    let read = async {
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end + 4]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        (name.eq_ignore_ascii_case("content-length") || name == "l")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if pending.len() >= end + 4 + length {
                    let message: Vec<u8> = pending.drain(..end + 4 + length).collect();
                    return String::from_utf8_lossy(&message).to_string();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stream closed before a whole message");
            pending.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a message within 5 s")
}

/// The first value of header `name` in `message`.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

fn invite(local: SocketAddr, edge: SocketAddr) -> String {
    format!(
        "INVITE sip:+81311110001@{edge};transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bKtls1;rport\r\n\
         Record-Route: <sip:{local};transport=tls;lr;r2=on>\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+819012345678@{local}>;tag=caller1\r\n\
         To: <sip:+81311110001@{edge}>\r\n\
         Call-ID: tls-call-1@{local}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:+819012345678@{local};transport=tls>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

#[tokio::test]
async fn a_call_over_tls_is_answered_and_ended_on_its_connection() {
    let (harness, mut calls) = start_edge().await;
    let mut stream = connect(harness.ca.client(), harness.tls, "localhost").await;
    let local = stream.get_ref().0.local_addr().unwrap();
    stream
        .write_all(invite(local, harness.tls).as_bytes())
        .await
        .unwrap();
    let call = tokio::time::timeout(Duration::from_secs(5), calls.recv())
        .await
        .unwrap()
        .expect("the INVITE reaches call control");
    assert_eq!(call.source, local);
    let mut leg = call.leg;
    leg.answer(SDP.as_bytes().to_vec()).unwrap();
    let mut pending = Vec::new();
    let ok = loop {
        let message = read_message(&mut stream, &mut pending).await;
        if message.starts_with("SIP/2.0 200") {
            break message;
        }
        assert!(message.starts_with("SIP/2.0 1"), "{message}");
    };
    let contact = header(&ok, "Contact").unwrap();
    assert!(
        contact.contains(&format!("{};transport=tls", harness.tls)),
        "our Contact names our TLS listener: {contact}"
    );
    assert_eq!(
        header(&ok, "Record-Route"),
        Some(format!("<sip:{local};transport=tls;lr;r2=on>").as_str()),
        "the Record-Route set is echoed unchanged"
    );
    assert!(header(&ok, "Via").unwrap().starts_with("SIP/2.0/TLS "));
    let to = header(&ok, "To").unwrap().to_owned();
    let ack = format!(
        "ACK sip:{} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls2;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+819012345678@{local}>;tag=caller1\r\nTo: {to}\r\nCall-ID: tls-call-1@{local}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        harness.tls
    );
    stream.write_all(ack.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Our BYE comes back on the caller's connection, through its route,
    // its top Via naming TLS and our listener.
    let hang_up = tokio::spawn(async move {
        leg.hang_up().await.unwrap();
        leg
    });
    let bye = read_message(&mut stream, &mut pending).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    let via = header(&bye, "Via").unwrap();
    assert!(
        via.starts_with(&format!("SIP/2.0/TLS {}", harness.tls)),
        "our request's Via names TLS and our listener: {via}"
    );
    assert_eq!(
        header(&bye, "Route"),
        Some(format!("<sip:{local};transport=tls;lr;r2=on>").as_str())
    );
    let response = answer(&bye, "200 OK", None);
    stream.write_all(response.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), hang_up)
        .await
        .expect("the BYE is answered")
        .unwrap();
    harness.edge.stop();
}

#[tokio::test]
async fn garbage_over_tls_gets_400_and_a_peer_without_tls_is_closed() {
    let (harness, _calls) = start_edge().await;
    let mut stream = connect(harness.ca.client(), harness.tls, "localhost").await;
    let local = stream.get_ref().0.local_addr().unwrap();
    // A request the gate refuses (no Max-Forwards) gets its 400 on the stream.
    let bad = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKbad\r\nFrom: <sip:a@{local}>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: bad-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        harness.tls
    );
    stream.write_all(bad.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let answer = read_message(&mut stream, &mut pending).await;
    assert!(
        answer.starts_with("SIP/2.0 400 Missing Max-Forwards"),
        "{answer}"
    );
    // The connection still serves a good request.
    let options = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKok\r\nMax-Forwards: 70\r\nFrom: <sip:a@{local}>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        harness.tls
    );
    stream.write_all(options.as_bytes()).await.unwrap();
    let answer = read_message(&mut stream, &mut pending).await;
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");

    // Plain SIP to the TLS port is no handshake: the connection closes.
    let mut plain = TcpStream::connect(harness.tls).await.unwrap();
    plain.write_all(options.as_bytes()).await.unwrap();
    let mut buffer = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buffer))
        .await
        .expect("closed within 5 s");
    // A TLS alert at most, never a SIP answer.
    if let Ok(n) = read {
        assert!(
            !String::from_utf8_lossy(&buffer[..n]).contains("SIP/2.0"),
            "a plain peer got SIP back"
        );
    }
    // A client that does not trust our certificate fails its handshake.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = TestCa::new(elsewhere.path());
    let stream = TcpStream::connect(harness.tls).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(other.client())
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            stream,
        )
        .await;
    assert!(refused.is_err(), "our certificate is not from its CA");
    harness.edge.stop();
}

/// The response `status` (`"486 Busy Here"`) to `request`: its Via,
/// From, To (with `to_tag` added when given), Call-ID and CSeq.
fn answer(request: &str, status: &str, to_tag: Option<&str>) -> String {
    let mut echoed = String::new();
    for line in request.split("\r\n") {
        let name = line.split(':').next().unwrap_or("");
        if ["Via", "From", "To", "Call-ID", "CSeq"].contains(&name) {
            echoed.push_str(line);
            if let (Some(tag), "To") = (to_tag, name) {
                echoed.push_str(";tag=");
                echoed.push_str(tag);
            }
            echoed.push_str("\r\n");
        }
    }
    format!("SIP/2.0 {status}\r\n{echoed}Content-Length: 0\r\n\r\n")
}

/// A TLS peer on `listener` serving `server`: answers the first request
/// as `respond` says (then reads one more message, the ACK, when
/// `acked`) and hands the request over.
fn tls_peer_on(
    listener: TcpListener,
    server: Arc<rustls::ServerConfig>,
    respond: fn(&str) -> String,
    acked: bool,
) -> (SocketAddr, tokio::task::JoinHandle<Option<String>>) {
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.ok()?;
        let mut stream = tokio_rustls::TlsAcceptor::from(server)
            .accept(stream)
            .await
            .ok()?;
        let mut pending = Vec::new();
        let request = read_message(&mut stream, &mut pending).await;
        stream.write_all(respond(&request).as_bytes()).await.ok()?;
        if acked {
            // Wait for the ACK so the transaction ends cleanly.
            let _ = read_message(&mut stream, &mut pending).await;
        }
        Some(request)
    });
    (address, task)
}

/// A TLS peer on 127.0.0.1 serving `certificate`: answers the first
/// INVITE with 486 and hands the INVITE over.
async fn busy_tls_peer(
    server: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tls_peer_on(
        listener,
        server,
        |invite| answer(invite, "486 Busy Here", Some("busy1")),
        true,
    )
}

/// Calls a busy TLS peer serving `server` through the edge: the peer's
/// address, the code the leg failed with, and the INVITE the peer got.
async fn call_busy_peer(
    harness: &Harness,
    server: Arc<rustls::ServerConfig>,
) -> (SocketAddr, Option<u16>, Option<String>) {
    let (address, peer) = busy_tls_peer(server).await;
    let mut leg = harness
        .edge
        .place_call(tls_request(address.port()))
        .await
        .expect("the call is placed over TLS");
    let mut code = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), leg.next_event())
        .await
        .expect("the leg ends")
    {
        if let OutboundEvent::Failed { code: c, .. } = event {
            code = Some(c);
            break;
        }
    }
    (address, code, peer.await.unwrap())
}

fn tls_request(port: u16) -> OutboundRequest {
    OutboundRequest {
        request_uri: format!("sip:+81312345678@localhost:{port};transport=tls"),
        from_user: "+815012345678".into(),
        offer: SDP.as_bytes().to_vec(),
        credentials: None,
        trunk: None,
        transport: None,
    }
}

#[tokio::test]
async fn an_outbound_call_over_tls_checks_the_peer_certificate_and_its_name() {
    let (harness, _calls) = start_edge().await;

    // Right CA, right name: the INVITE goes over TLS and the answer comes back.
    let good = harness.ca.issue("peer", &["localhost"]);
    let (address, code, invite) = call_busy_peer(&harness, harness.ca.server(&good)).await;
    assert_eq!(code, Some(486));
    let invite = invite.expect("the peer got the INVITE");
    assert!(
        invite.starts_with(&format!(
            "INVITE sip:+81312345678@localhost:{};transport=tls SIP/2.0",
            address.port()
        )),
        "the Request-URI keeps the host name: {invite}"
    );
    assert!(header(&invite, "Via").unwrap().starts_with("SIP/2.0/TLS "));
    assert!(
        header(&invite, "Contact")
            .unwrap()
            .contains(&format!("{};transport=tls", harness.tls)),
        "{invite}"
    );

    // A certificate for another name: refused before anything is sent.
    let misnamed = harness.ca.issue("misnamed", &["wrong.example"]);
    let (address, peer) = busy_tls_peer(harness.ca.server(&misnamed)).await;
    let error = harness
        .edge
        .place_call(tls_request(address.port()))
        .await
        .expect_err("a certificate for another name is refused");
    let text = error.to_string();
    assert!(matches!(error, EdgeError::Tls(_)), "{text}");
    assert!(
        text.contains("cannot reach localhost") && text.contains("not valid for name"),
        "the error says why: {text}"
    );
    assert_eq!(peer.await.unwrap(), None, "no INVITE reached the peer");

    // A certificate from an authority we do not trust: refused too.
    let dir = tempfile::tempdir().unwrap();
    let stranger = TestCa::new(dir.path());
    let foreign = stranger.issue("foreign", &["localhost"]);
    let (address, _peer) = busy_tls_peer(stranger.server(&foreign)).await;
    let text = harness
        .edge
        .place_call(tls_request(address.port()))
        .await
        .expect_err("an untrusted issuer is refused")
        .to_string();
    assert!(text.contains("invalid peer certificate"), "{text}");

    // Trusting that authority from now on (a reload of sip.tls.ca): the
    // same kind of peer is called.
    harness.edge.set_tls_client(stranger.client());
    let (_, code, invite) = call_busy_peer(&harness, stranger.server(&foreign)).await;
    assert_eq!(code, Some(486));
    assert!(invite.is_some(), "the peer got the INVITE");
    harness.edge.stop();
}

/// A TLS peer on 127.0.0.1 serving `server`: answers the first request
/// with 200 and hands the request over.
async fn answering_tls_peer(
    server: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    answering_on(listener, server)
}

/// [`answering_tls_peer`] on a listener already bound.
fn answering_on(
    listener: TcpListener,
    server: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<Option<String>>) {
    tls_peer_on(
        listener,
        server,
        |request| answer(request, "200 OK", None),
        false,
    )
}

/// A dialog stored with a call by a process that is gone: one we placed
/// to `dialled` (the name in the To of our INVITE), the peer's Contact at
/// `peer` over TLS, no route.
fn stored_dialog(harness: &Harness, peer: SocketAddr, dialled: &str) -> DialogRecord {
    DialogRecord {
        role: DialogRole::Uac,
        call_id: format!("stored-{}@tb.example", peer.port()),
        local_tag: "ours".into(),
        remote_tag: "theirs".into(),
        local_cseq: 1,
        from: "<sip:+815012345678@tb.example>;tag=ours".into(),
        to: format!(
            "<sip:+81312345678@{dialled}:{};transport=tls>;tag=theirs",
            peer.port()
        ),
        local_contact: Some(format!("sip:{};transport=tls", harness.tls)),
        remote_target: format!("sip:+81312345678@{peer};transport=tls"),
        route_set: Vec::new(),
        transport: Transport::Tls,
    }
}

#[tokio::test]
async fn a_stored_dialog_is_ended_over_tls_checked_under_our_roots() {
    let (harness, _calls) = start_edge().await;

    // We placed the call to "localhost"; the peer's Contact is an address.
    // Its certificate names only "localhost": the BYE goes out on a
    // connection checked against that name, and is answered.
    let named = harness.ca.issue("named", &["localhost"]);
    let (peer, seen) = answering_tls_peer(harness.ca.server(&named)).await;
    let record = stored_dialog(&harness, peer, "localhost");
    let outcome = harness.edge.end_recorded(&record).await.unwrap();
    assert_eq!(outcome, ByeOutcome::Answered(200));
    let bye = seen.await.unwrap().expect("the peer got the BYE");
    assert!(
        bye.starts_with(&format!(
            "BYE sip:+81312345678@{peer};transport=tls SIP/2.0"
        )),
        "{bye}"
    );
    assert_eq!(header(&bye, "Call-ID"), Some(record.call_id.as_str()));
    assert!(
        header(&bye, "Via").unwrap().starts_with("SIP/2.0/TLS "),
        "{bye}"
    );

    // A certificate for another name: nothing is sent, and the outcome
    // says why.
    let misnamed = harness.ca.issue("misnamed-bye", &["wrong.example"]);
    let (peer, seen) = answering_tls_peer(harness.ca.server(&misnamed)).await;
    let outcome = harness
        .edge
        .end_recorded(&stored_dialog(&harness, peer, "localhost"))
        .await
        .unwrap();
    let ByeOutcome::Unanswered(why) = outcome else {
        panic!("a misnamed peer answered: {outcome:?}");
    };
    assert!(
        why.contains("cannot reach localhost") && why.contains("not valid for name"),
        "{why}"
    );
    assert_eq!(seen.await.unwrap(), None, "no BYE reached the peer");

    // A call that came to us (no name dialled) through a proxy's
    // Record-Route at an address: the BYE goes through that route, whose
    // certificate must name the address.
    let by_address = harness.ca.issue("proxy", &["127.0.0.1"]);
    let (proxy, seen) = answering_tls_peer(harness.ca.server(&by_address)).await;
    let record = DialogRecord {
        role: DialogRole::Uas,
        route_set: vec![format!("<sip:{proxy};transport=tls;lr;r2=on>")],
        remote_target: "sip:+819012345678@172.25.10.20:5061;transport=tls".into(),
        ..stored_dialog(&harness, proxy, "localhost")
    };
    let outcome = harness.edge.end_recorded(&record).await.unwrap();
    assert_eq!(outcome, ByeOutcome::Answered(200));
    let bye = seen.await.unwrap().expect("the proxy got the BYE");
    assert_eq!(
        header(&bye, "Route"),
        Some(format!("<sip:{proxy};transport=tls;lr;r2=on>").as_str())
    );

    // The same route written without its port: 5061 is dialled, and the
    // Route goes out as written. (A loopback address of its own, so that
    // port is free.)
    let mut listener = None;
    for attempt in 0..20 {
        let ip = format!(
            "127.{}.{}.{}",
            varying_byte(attempt),
            varying_byte(attempt + 1),
            varying_byte(attempt + 2)
        );
        if let Ok(bound) = TcpListener::bind((ip.as_str(), 5061)).await {
            listener = Some(bound);
            break;
        }
    }
    let listener = listener.expect("a loopback address with 5061 free");
    let ip = listener.local_addr().unwrap().ip();
    let portless = harness.ca.issue("portless", &[&ip.to_string()]);
    let (_, seen) = answering_on(listener, harness.ca.server(&portless));
    let route = format!("<sip:{ip};transport=tls;lr>");
    let record = DialogRecord {
        route_set: vec![route.clone()],
        ..record
    };
    let outcome = harness.edge.end_recorded(&record).await.unwrap();
    assert_eq!(outcome, ByeOutcome::Answered(200));
    let bye = seen.await.unwrap().expect("the proxy got the BYE");
    assert_eq!(header(&bye, "Route"), Some(route.as_str()));
    harness.edge.stop();
}

/// A byte from 2 to 254 that differs from run to run (`salt` apart).
fn varying_byte(salt: u32) -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = nanos.wrapping_mul(2_654_435_761).rotate_left(salt * 7) ^ std::process::id();
    2 + (mixed % 253) as u8
}
