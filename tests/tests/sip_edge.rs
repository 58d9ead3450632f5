//! The SIP edge against SIPp and raw sockets, on 127.0.0.1 with ephemeral
//! ports. The edge runs in-process with a small call handler standing in for
//! call control: it rings and answers, or only rings, by dialled number.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use tokio::sync::mpsc;
use tollbridge_e2e::edge::{lab_edge_config, listener};
use tollbridge_e2e::{run_sipp, run_sipp_over};
use tollbridge_sip::edge::{InboundCall, LegEvent, SipEdge, Transport};
use tollbridge_sip::gate::UnknownSourcePolicy;

/// Dialled numbers the test handler knows.
const ANSWER_THEN_HANG_UP: &str = "+81311110001";
const RING_ONLY: &str = "+81311110002";
const ANSWER_AND_HOLD: &str = "+81311110003";

const SDP_ANSWER: &str = "v=0\r\no=tollbridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n";

/// What the handler saw of each call: (Call-ID, called, events).
type Seen = (String, Option<String>, Vec<String>);

struct Harness {
    edge: SipEdge,
    udp: SocketAddr,
    tcp: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

async fn start_edge(policy: UnknownSourcePolicy) -> Harness {
    let config = lab_edge_config(&[Transport::Udp, Transport::Tcp], policy);
    let (edge, mut calls) = SipEdge::start(config).await.expect("edge starts");
    let udp = listener(&edge, Transport::Udp);
    let tcp = listener(&edge, Transport::Tcp);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(call) = calls.recv().await {
            tokio::spawn(handle(call, seen_tx.clone()));
        }
    });
    Harness {
        edge,
        udp,
        tcp,
        seen,
    }
}

/// Stands in for call control.
async fn handle(call: InboundCall, seen: mpsc::UnboundedSender<Seen>) {
    let InboundCall {
        call_id,
        called,
        mut leg,
        ..
    } = call;
    let mut events = Vec::new();
    leg.ring(None).unwrap();
    if called.as_deref() == Some(ANSWER_AND_HOLD) {
        leg.answer(SDP_ANSWER.as_bytes().to_vec()).unwrap();
        while let Some(event) = leg.next_event().await {
            match event {
                LegEvent::Reoffer(reoffer) => {
                    let held = String::from_utf8_lossy(&reoffer.offer).contains("a=sendonly");
                    events.push(format!("reoffer sendonly={held}"));
                    let answer =
                        SDP_ANSWER.replace("a=ptime:20\r\n", "a=ptime:20\r\na=recvonly\r\n");
                    reoffer.accept(answer.into_bytes()).await.unwrap();
                }
                LegEvent::HungUp => {
                    events.push("HungUp".into());
                    break;
                }
                other => events.push(format!("{other:?}")),
            }
        }
    } else if called.as_deref() == Some(ANSWER_THEN_HANG_UP) {
        leg.answer(SDP_ANSWER.as_bytes().to_vec()).unwrap();
        if let Some(event) = leg.next_event().await {
            events.push(format!("{event:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        leg.hang_up().await.unwrap();
        events.push("hung up".into());
    } else {
        if let Some(event) = leg.next_event().await {
            events.push(format!("{event:?}"));
        }
        // Keep the leg until the event is reported so Drop does not act.
        let _ = seen.send((call_id, called, events));
        return;
    }
    let _ = seen.send((call_id, called, events));
}

async fn sipp(
    scenario: &'static str,
    remote: SocketAddr,
    local_ip: &'static str,
    service: &'static str,
) -> tollbridge_e2e::SippRun {
    tokio::task::spawn_blocking(move || {
        run_sipp(scenario, remote, local_ip, service, Duration::from_secs(15))
    })
    .await
    .unwrap()
}

async fn next_seen(h: &mut Harness) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), h.seen.recv())
        .await
        .expect("the handler reports the call")
        .unwrap()
}

/// Sends `datagram` from a fresh socket on 127.0.0.1 and returns the
/// reply's first line, or `None` after 500 ms of silence.
fn exchange(to: SocketAddr, datagram: &[u8]) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket.send_to(datagram, to).unwrap();
    let mut buffer = [0u8; 65536];
    let (n, _) = socket.recv_from(&mut buffer).ok()?;
    String::from_utf8_lossy(&buffer[..n])
        .lines()
        .next()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_gets_200_with_allow_and_accept() {
    let h = start_edge(UnknownSourcePolicy::Drop).await;
    let run = sipp("options.xml", h.udp, "127.0.0.1", "tollbridge").await;
    assert!(run.passed(), "{}", run.output);
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_shaped_call_is_answered_echoing_routes_and_hung_up_through_them() {
    let mut h = start_edge(UnknownSourcePolicy::Drop).await;
    let run = sipp("twilio_call.xml", h.udp, "127.0.0.1", ANSWER_THEN_HANG_UP).await;
    assert!(run.passed(), "{}", run.output);
    let (_, called, events) = next_seen(&mut h).await;
    assert_eq!(called.as_deref(), Some(ANSWER_THEN_HANG_UP));
    assert_eq!(events, ["Confirmed", "hung up"]);
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_gets_200_and_487() {
    let mut h = start_edge(UnknownSourcePolicy::Drop).await;
    let run = sipp("cancel.xml", h.udp, "127.0.0.1", RING_ONLY).await;
    assert!(run.passed(), "{}", run.output);
    let (_, _, events) = next_seen(&mut h).await;
    assert_eq!(events, ["Cancelled"]);
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outside_the_acl_gets_403_in_reject_mode_and_no_call() {
    let mut h = start_edge(UnknownSourcePolicy::Reject).await;
    let run = sipp("options_forbidden.xml", h.udp, "127.0.0.2", "tollbridge").await;
    assert!(run.passed(), "{}", run.output);
    assert_eq!(
        h.edge
            .gate_stats()
            .unknown_source
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(h.seen.try_recv().is_err(), "no call was created");
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outside_the_acl_gets_silence_in_drop_mode() {
    let h = start_edge(UnknownSourcePolicy::Drop).await;
    let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let options = format!(
        "OPTIONS sip:x@{0} SIP/2.0\r\nVia: SIP/2.0/UDP {1};branch=z9hG4bKdrop;rport\r\nFrom: <sip:a@{1}>;tag=1\r\n\
         To: <sip:x@{0}>\r\nCall-ID: drop-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        h.udp,
        socket.local_addr().unwrap()
    );
    socket.send_to(options.as_bytes(), h.udp).unwrap();
    let mut buffer = [0u8; 2048];
    assert!(socket.recv_from(&mut buffer).is_err(), "expected silence");
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_corpus_gets_400_or_silence_and_a_call_still_works_after() {
    let mut h = start_edge(UnknownSourcePolicy::Drop).await;
    let good = |edit: &dyn Fn(String) -> String| {
        edit(format!(
            "OPTIONS sip:x@{0} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad;rport\r\nFrom: <sip:a@b>;tag=1\r\n\
             To: <sip:x@{0}>\r\nCall-ID: bad-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            h.udp
        ))
        .into_bytes()
    };
    let mut non_utf8 = good(&|m| m);
    let at = non_utf8.windows(4).position(|w| w == b"From").unwrap();
    non_utf8[at + 1] = 0xfe;
    let corpus: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "bad Content-Length",
            good(&|m| m.replace("Content-Length: 0", "Content-Length: 40")),
            Some("SIP/2.0 400 Content-Length Mismatch"),
        ),
        (
            "missing Call-ID",
            good(&|m| m.replace("Call-ID: bad-1\r\n", "")),
            None,
        ),
        (
            "missing Max-Forwards",
            good(&|m| m.replace("Max-Forwards: 70\r\n", "")),
            Some("SIP/2.0 400 Missing Max-Forwards"),
        ),
        (
            "garbage bytes",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage".to_vec(),
            None,
        ),
        (
            "64 KB header",
            good(&|m| {
                m.replace(
                    "Max-Forwards",
                    &format!("X-Pad: {}\r\nMax-Forwards", "x".repeat(64_000)),
                )
            }),
            Some("SIP/2.0 400 Message Too Large"),
        ),
        ("non-UTF-8 header", non_utf8, None),
    ];
    for (name, datagram, want) in corpus {
        assert_eq!(exchange(h.udp, &datagram).as_deref(), want, "case {name}");
    }
    // The edge is unharmed: a normal call right after works.
    let run = sipp("twilio_call.xml", h.udp, "127.0.0.1", ANSWER_THEN_HANG_UP).await;
    assert!(run.passed(), "{}", run.output);
    assert_eq!(next_seen(&mut h).await.2, ["Confirmed", "hung up"]);
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_new_invites_get_503() {
    let h = start_edge(UnknownSourcePolicy::Drop).await;
    h.edge.start_draining();
    let invite = format!(
        "INVITE sip:{ANSWER_THEN_HANG_UP}@{0} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKdrain;rport\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:{ANSWER_THEN_HANG_UP}@{0}>\r\nCall-ID: drain-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:a@127.0.0.1:9>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        h.udp
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(invite.as_bytes(), h.udp).unwrap();
    let mut buffer = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buffer).expect("a response");
    let first = String::from_utf8_lossy(&buffer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(first, "SIP/2.0 503 Service Unavailable");
    // A dispatcher's OPTIONS probe gets 503 too, so it stops sending here.
    let run = sipp("options_draining.xml", h.udp, "127.0.0.1", "tollbridge").await;
    assert!(run.passed(), "{}", run.output);
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_gets_405_with_allow() {
    let h = start_edge(UnknownSourcePolicy::Drop).await;
    let run = sipp("unknown_method.xml", h.udp, "127.0.0.1", "tollbridge").await;
    assert!(run.passed(), "{}", run.output);
    assert_eq!(
        h.edge
            .gate_stats()
            .unknown_method
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_bye_reuses_the_callers_connection() {
    let mut h = start_edge(UnknownSourcePolicy::Drop).await;
    let tcp = h.tcp;
    let run = tokio::task::spawn_blocking(move || {
        run_sipp_over(
            "twilio_call.xml",
            tcp,
            "127.0.0.1",
            ANSWER_THEN_HANG_UP,
            "t1",
            Duration::from_secs(15),
        )
    })
    .await
    .unwrap();
    assert!(run.passed(), "{}", run.output);
    assert_eq!(next_seen(&mut h).await.2, ["Confirmed", "hung up"]);
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_invite_is_absorbed_by_the_transaction_layer() {
    let mut h = start_edge(UnknownSourcePolicy::Drop).await;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = socket.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:{RING_ONLY}@{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKretrans1;rport\r\n\
         From: <sip:+819012345678@{me}>;tag=r1\r\nTo: <sip:{RING_ONLY}@{0}>\r\nCall-ID: retrans-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:+819012345678@{me}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        h.udp
    );
    socket.send_to(invite.as_bytes(), h.udp).unwrap();
    socket.send_to(invite.as_bytes(), h.udp).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut statuses = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok((n, _)) = socket.recv_from(&mut buffer) {
        statuses.push(
            String::from_utf8_lossy(&buffer[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("SIP/2.0 100 Trying"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| s.starts_with("SIP/2.0 1")),
        "only provisionals: {statuses:?}"
    );
    // CANCEL it so the handler reports the one and only call.
    let cancel = invite
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    socket.send_to(cancel.as_bytes(), h.udp).unwrap();
    let (call_id, _, events) = next_seen(&mut h).await;
    assert_eq!(
        (call_id.as_str(), events),
        ("retrans-1", vec!["Cancelled".to_owned()])
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        h.seen.try_recv().is_err(),
        "the repeated INVITE made no second call"
    );
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_per_source_are_capped() {
    use std::io::Read;
    let h = start_edge(UnknownSourcePolicy::Drop).await;
    let tcp = h.tcp;
    let closed_at_once = |stream: &mut std::net::TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        matches!(stream.read(&mut byte), Ok(0))
    };
    // The harness allows 4 per source: the 5th is closed on accept.
    let mut open: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(tcp).unwrap())
        .collect();
    let mut fifth = std::net::TcpStream::connect(tcp).unwrap();
    assert!(closed_at_once(&mut fifth), "the 5th connection is closed");
    assert!(!closed_at_once(&mut open[0]), "the first four stay open");
    assert_eq!(
        h.edge
            .gate_stats()
            .connection_limit
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Closing one frees a slot once the stack has seen it close.
    drop(open.remove(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = std::net::TcpStream::connect(tcp).unwrap();
        if !closed_at_once(&mut again) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
    }
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_reinvite_reaches_the_leg_owner_and_is_answered() {
    let mut h = start_edge(UnknownSourcePolicy::Drop).await;
    let run = sipp("reinvite_hold.xml", h.udp, "127.0.0.1", ANSWER_AND_HOLD).await;
    assert!(run.passed(), "{}", run.output);
    let (_, _, events) = next_seen(&mut h).await;
    assert_eq!(events, ["Confirmed", "reoffer sendonly=true", "HungUp"]);
    h.edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_every_message_is_checked_before_the_stack_sees_it() {
    use std::io::{BufRead, BufReader, Write};
    let h = start_edge(UnknownSourcePolicy::Drop).await;
    let tcp = h.tcp;
    let mut stream = std::net::TcpStream::connect(tcp).unwrap();
    let me = stream.local_addr().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let options = |call_id: &str, extra: &str| {
        format!(
            "OPTIONS sip:x@{tcp} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK{call_id}\r\nFrom: <sip:a@{me}>;tag=1\r\n\
             To: <sip:x@{tcp}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    // A non-UTF-8 header line: dropped, nothing answered, connection kept.
    let mut bad = options("tcp-1", "Max-Forwards: 70\r\n");
    let at = bad.windows(4).position(|w| w == b"From").unwrap();
    bad[at + 1] = 0xff;
    stream.write_all(&bad).unwrap();
    // No Max-Forwards: 400 on the same connection.
    stream.write_all(&options("tcp-2", "")).unwrap();
    // Then a good one, which the stack answers: 200.
    stream
        .write_all(&options("tcp-3", "Max-Forwards: 70\r\n"))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status_lines = Vec::new();
    let mut line = String::new();
    while status_lines.len() < 2 && reader.read_line(&mut line).unwrap_or(0) > 0 {
        if line.starts_with("SIP/2.0 ") {
            status_lines.push(line.trim_end().to_owned());
        }
        line.clear();
    }
    assert_eq!(
        status_lines,
        ["SIP/2.0 400 Missing Max-Forwards", "SIP/2.0 200 OK"]
    );
    assert_eq!(
        h.edge
            .gate_stats()
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // A stream that cannot be framed (no Content-Length) is closed.
    stream
        .write_all(b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    // Ok means end of stream (closed); a timeout would be an error.
    let closed = std::io::Read::read_to_string(&mut reader, &mut rest).is_ok();
    assert!(
        closed,
        "the connection is closed after an unframeable message"
    );
    h.edge.stop();
}
