//! Calls the edge places (outbound legs) against SIPp acting as Twilio's
//! termination, on 127.0.0.1 with ephemeral ports: the 407 challenge
//! answered with the right digest over UDP and TCP, a request too large
//! for a datagram moved to TCP, a silent address left after 4 s.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::num::NonZeroU32;
use std::time::Duration;

use tollbridge_e2e::SippServer;
use tollbridge_e2e::edge::lab_edge_config;
use tollbridge_sip::edge::{OutboundEvent, OutboundRequest, SipEdge, Transport};
use tollbridge_sip::gate::UnknownSourcePolicy;

/// Our SDP offer in these calls.
const OFFER: &str = "v=0\r\no=tollbridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n";

/// An edge on UDP and TCP; no call is offered to it in these tests.
async fn start_edge() -> SipEdge {
    let config = lab_edge_config(&[Transport::Udp, Transport::Tcp], UnknownSourcePolicy::Drop);
    SipEdge::start(config).await.expect("edge starts").0
}

/// SIPp as Twilio's termination (`uas_digest.xml`: 407, our digest
/// checked, 183 with early media, 200) on `sipp_transport`.
async fn digest_uas(sipp_transport: &'static str, timeout: Duration) -> SippServer {
    tokio::task::spawn_blocking(move || {
        SippServer::start("uas_digest.xml", sipp_transport, timeout)
    })
    .await
    .unwrap()
}

/// Our call to `user` at the SIPp termination, with the trunk's
/// credentials and no trunk limit.
fn to_termination(
    user: &str,
    server: &SippServer,
    transport: Option<Transport>,
) -> OutboundRequest {
    OutboundRequest {
        request_uri: format!("sip:{user}@localhost:{}", server.addr.port()),
        from_user: "+815012345678".into(),
        offer: OFFER.as_bytes().to_vec(),
        credentials: Some(("tollbridge".into(), "trunk-secret".into())),
        trunk: None,
        transport,
    }
}

/// Places a call to a SIPp UAS acting as Twilio's termination: it
/// challenges with 407, checks our digest answer, rings with early media,
/// answers; we hang up.
async fn outbound_with_digest(transport: Transport, sipp_transport: &'static str) {
    outbound_with_digest_to("+81312345678", Some(transport), sipp_transport).await;
}

/// [`outbound_with_digest`] to `user` at the SIPp UAS, over the transport
/// the edge picks when `transport` is `None`; returns SIPp's output.
async fn outbound_with_digest_to(
    user: &str,
    transport: Option<Transport>,
    sipp_transport: &'static str,
) -> String {
    let edge = start_edge().await;
    let server = digest_uas(sipp_transport, Duration::from_secs(15)).await;
    let mut request = to_termination(user, &server, transport);
    request.trunk = Some(("twilio".into(), NonZeroU32::new(1).unwrap()));
    let placed = tokio::time::timeout(Duration::from_secs(10), edge.place_call(request))
        .await
        .expect("the call is placed in time");
    let mut leg = match placed {
        Ok(leg) => leg,
        Err(e) => {
            let run = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(1)))
                .await
                .unwrap();
            panic!("the call was not placed: {e}\n{}", run.output);
        }
    };
    let mut seen = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = leg.next_event().await {
            let done = matches!(
                event,
                OutboundEvent::Answered { .. }
                    | OutboundEvent::Failed { .. }
                    | OutboundEvent::Ended(_)
            );
            seen.push(event);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "no final event; saw {seen:?}");
    assert!(
        matches!(
            seen.first(),
            Some(OutboundEvent::Ringing {
                early_media: Some(_)
            })
        ),
        "183 with SDP first: {seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(OutboundEvent::Answered { answer }) if !answer.is_empty()),
        "{seen:?}"
    );
    leg.hang_up().await.unwrap();
    let run = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(run.passed(), "{}", run.output);
    assert_digest_is_right(&run.output, "tollbridge", "trunk-secret");
    edge.stop();
    run.output
}

/// Finds the Proxy-Authorization SIPp received and checks its RFC 2617
/// digest (qop=auth) against the password, and that the retry's CSeq is
/// the challenged INVITE's plus one.
fn assert_digest_is_right(sipp_output: &str, username: &str, password: &str) {
    let mut cseqs: Vec<u32> = Vec::new();
    for line in sipp_output.lines() {
        if let Some(n) = line
            .strip_prefix("CSeq: ")
            .and_then(|v| v.strip_suffix(" INVITE"))
            .and_then(|n| n.parse().ok())
            && !cseqs.contains(&n)
        {
            cseqs.push(n);
        }
    }
    assert_eq!(cseqs.len(), 2, "two INVITE CSeqs: {cseqs:?}");
    assert_eq!(cseqs[1], cseqs[0] + 1, "the retry has CSeq + 1");
    use md5::{Digest, Md5};
    let hex = |text: String| format!("{:x}", Md5::digest(text.as_bytes()));
    let line = sipp_output
        .lines()
        .find(|l| l.starts_with("Proxy-Authorization: Digest "))
        .unwrap_or_else(|| panic!("no Proxy-Authorization in:\n{sipp_output}"));
    let field = |name: &str| -> String {
        let start = line
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            + name.len()
            + 1;
        let rest = &line[start..];
        let value = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().unwrap_or_default(),
            None => rest.split([',', ' ']).next().unwrap_or_default(),
        };
        value.to_owned()
    };
    assert_eq!(field("username"), username);
    assert_eq!(field("realm"), "sip.twilio.com");
    let ha1 = hex(format!("{username}:{}:{password}", field("realm")));
    let ha2 = hex(format!("INVITE:{}", field("uri")));
    let expected = hex(format!(
        "{ha1}:{}:{}:{}:{}:{ha2}",
        field("nonce"),
        field("nc"),
        field("cnonce"),
        field("qop")
    ));
    assert_eq!(field("response"), expected, "digest response in {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_answers_a_407_challenge_over_udp() {
    outbound_with_digest(Transport::Udp, "u1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_answers_a_407_challenge_over_tcp() {
    outbound_with_digest(Transport::Tcp, "t1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_too_large_for_a_datagram_once_challenged_goes_over_tcp() {
    // A ~700-character callee: the INVITE with its digest answer is well
    // over 1,300 bytes, so it must not go out over UDP (RFC 3261 §18.1.1).
    // SIPp listens on TCP only: a UDP INVITE would never be answered.
    let user = format!("+81312345678{}", "9".repeat(690));
    let output = outbound_with_digest_to(&user, None, "t1").await;
    let challenged = output
        .split("----------------------------------------------")
        .find(|message| message.contains("Proxy-Authorization: Digest"))
        .expect("the challenged INVITE in SIPp's trace");
    let start = challenged.find("INVITE sip:").expect("its request line");
    assert!(
        challenged[start..].trim_end().len() > 1300,
        "the test's INVITE must be over the UDP limit: {} bytes",
        challenged[start..].trim_end().len()
    );
    assert!(challenged.contains("SIP/2.0/TCP"), "{challenged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_address_is_left_after_4_s_for_the_next() {
    let edge = start_edge().await;
    // A socket that reads nothing and answers nothing: pure silence.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = digest_uas("u1", Duration::from_secs(20)).await;
    let request = to_termination("+81312345678", &server, Some(Transport::Udp));
    let started = std::time::Instant::now();
    let mut leg = edge
        .place_call_to(request, vec![silent.local_addr().unwrap(), server.addr])
        .await
        .expect("the second address takes the call");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "moved on before 4 s of silence"
    );
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), leg.next_event())
        .await
        .unwrap()
    {
        if matches!(event, OutboundEvent::Answered { .. }) {
            break;
        }
    }
    leg.hang_up().await.unwrap();
    let run = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(run.passed(), "{}", run.output);
    assert_digest_is_right(&run.output, "tollbridge", "trunk-secret");
    drop(silent);
    edge.stop();
}
