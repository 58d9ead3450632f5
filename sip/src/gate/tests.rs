use super::*;
use crate::wire::Limits;
use governor::clock::FakeRelativeClock;

const CALLER: &str = "127.0.0.1:5070";
const STRANGER: &str = "127.0.0.2:5070";

fn options(call_id: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id}\r\n\
         From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn invite(call_id: &str, to_tag: bool) -> Vec<u8> {
    let tag = if to_tag { ";tag=abc" } else { "" };
    format!(
        "INVITE sip:+81312345678@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>{tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn gate(
    policy: UnknownSourcePolicy,
    per_second: u32,
) -> (Gate<FakeRelativeClock>, FakeRelativeClock) {
    let acl = Acl::new(vec![("lab".into(), vec!["127.0.0.1/32".parse().unwrap()])]);
    let rules = GateRules {
        acl,
        unknown_source: policy,
        limits: Limits::default(),
        registrar: Vec::new(),
    };
    let clock = FakeRelativeClock::default();
    let gate = Gate::with_clock(rules, NonZeroU32::new(per_second).unwrap(), clock.clone());
    (gate, clock)
}

fn status_line(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Reply { bytes, .. } => String::from_utf8_lossy(bytes)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        other => format!("{other:?}"),
    }
}

#[test]
fn an_allowed_source_passes_with_its_trunk() {
    let (gate, _) = gate(UnknownSourcePolicy::Drop, 10);
    assert_eq!(
        gate.inspect(&options("a"), CALLER.parse().unwrap()),
        Verdict::Pass {
            trunk: "lab".into()
        }
    );
}

#[test]
fn unknown_sources_are_dropped_or_forbidden() {
    let (drop_gate, _) = gate(UnknownSourcePolicy::Drop, 10);
    assert_eq!(
        drop_gate.inspect(&options("a"), STRANGER.parse().unwrap()),
        Verdict::Drop(DropReason::UnknownSource)
    );
    let (reject_gate, _) = gate(UnknownSourcePolicy::Reject, 10);
    let verdict = reject_gate.inspect(&options("a"), STRANGER.parse().unwrap());
    assert_eq!(status_line(&verdict), "SIP/2.0 403 Forbidden");
    // Even in reject mode, garbage from a stranger gets nothing back.
    assert_eq!(
        reject_gate.inspect(b"garbage", STRANGER.parse().unwrap()),
        Verdict::Drop(DropReason::UnknownSource)
    );
    assert_eq!(reject_gate.stats.unknown_source.load(Ordering::Relaxed), 2);
}

#[test]
fn malformed_requests_get_400_at_the_source_address() {
    let (gate, _) = gate(UnknownSourcePolicy::Drop, 10);
    let mut bad = options("a");
    bad.splice(
        bad.len() - 4..bad.len() - 4,
        b"\r\nContent-Length: 9".iter().copied(),
    );
    let verdict = gate.inspect(&bad, "127.0.0.1:40000".parse().unwrap());
    assert_eq!(
        status_line(&verdict),
        "SIP/2.0 400 Duplicate Content-Length"
    );
    let Verdict::Reply { target, .. } = verdict else {
        unreachable!()
    };
    // No rport in this Via: the sent-by port at the source IP.
    assert_eq!(target, "127.0.0.1:5070".parse().unwrap());
    assert_eq!(gate.stats.malformed.load(Ordering::Relaxed), 1);
}

#[test]
fn new_requests_over_the_rate_get_503_with_retry_after_and_dialog_requests_do_not_count() {
    let (gate, clock) = gate(UnknownSourcePolicy::Drop, 2);
    let source = CALLER.parse().unwrap();
    // Burst of twice the rate passes.
    for i in 0..4 {
        assert!(
            matches!(
                gate.inspect(&invite(&format!("c{i}"), false), source),
                Verdict::Pass { .. }
            ),
            "invite {i}"
        );
    }
    let verdict = gate.inspect(&invite("c4", false), source);
    assert_eq!(status_line(&verdict), "SIP/2.0 503 Service Unavailable");
    let Verdict::Reply { bytes, target, .. } = &verdict else {
        unreachable!()
    };
    assert!(String::from_utf8_lossy(bytes).contains("\r\nRetry-After: 1\r\n"));
    assert_eq!(*target, source, "rport: the source port");
    // Re-INVITEs (inside a dialog) are not limited; new OPTIONS are.
    assert!(matches!(
        gate.inspect(&invite("c0", true), source),
        Verdict::Pass { .. }
    ));
    assert_eq!(
        status_line(&gate.inspect(&options("o"), source)),
        "SIP/2.0 503 Service Unavailable"
    );
    // Half a second later one more INVITE fits.
    clock.advance(Duration::from_millis(500));
    assert!(matches!(
        gate.inspect(&invite("c5", false), source),
        Verdict::Pass { .. }
    ));
    assert_eq!(gate.stats.rate_limited.load(Ordering::Relaxed), 2);
}

#[test]
fn new_rules_apply_to_the_next_datagram() {
    let (gate, _) = gate(UnknownSourcePolicy::Drop, 10);
    let acl = Acl::new(vec![(
        "other".into(),
        vec!["127.0.0.2/32".parse().unwrap()],
    )]);
    gate.set_rules(GateRules {
        acl,
        unknown_source: UnknownSourcePolicy::Drop,
        limits: Limits::default(),
        registrar: Vec::new(),
    });
    assert_eq!(
        gate.inspect(&options("a"), STRANGER.parse().unwrap()),
        Verdict::Pass {
            trunk: "other".into()
        }
    );
    assert_eq!(
        gate.inspect(&options("a"), CALLER.parse().unwrap()),
        Verdict::Drop(DropReason::UnknownSource)
    );
}

#[test]
/// On the real clock, a burst (an INVITE and its retransmissions, back to
/// back) passes: spaced 60 ms apart, as this test once had them, they
/// would pass even with no burst allowance at 50/s.
fn on_the_real_clock_a_burst_of_invites_passes() {
    let acl = Acl::new(vec![("lab".into(), vec!["127.0.0.1/32".parse().unwrap()])]);
    let rules = GateRules {
        acl,
        unknown_source: UnknownSourcePolicy::Drop,
        limits: Limits::default(),
        registrar: Vec::new(),
    };
    let gate = Gate::new(rules, NonZeroU32::new(50).unwrap());
    let source = CALLER.parse().unwrap();
    for i in 0..3 {
        let verdict = gate.inspect(&invite("r", false), source);
        assert!(
            matches!(verdict, Verdict::Pass { .. }),
            "invite {i}: {verdict:?}"
        );
    }
}

#[test]
fn what_the_stack_cannot_parse_gets_400_from_the_gate() {
    let (gate, _) = gate(UnknownSourcePolicy::Drop, 10);
    // Passes our line-level checks, but the Request-URI has an empty host.
    let message = String::from_utf8(options("empty-host")).unwrap().replacen(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0",
        "OPTIONS sip:x@ SIP/2.0",
        1,
    );
    assert!(crate::wire::check(message.as_bytes(), Limits::default()).is_ok());
    let verdict = gate.inspect(message.as_bytes(), CALLER.parse().unwrap());
    assert_eq!(status_line(&verdict), "SIP/2.0 400 Unparseable Message");
}

#[test]
fn an_unknown_method_gets_405_with_allow_not_400() {
    let (gate, _) = gate(UnknownSourcePolicy::Drop, 10);
    let request = String::from_utf8(options("m"))
        .unwrap()
        .replace("OPTIONS", "FROBNICATE");
    let verdict = gate.inspect(request.as_bytes(), CALLER.parse().unwrap());
    assert_eq!(status_line(&verdict), "SIP/2.0 405 Method Not Allowed");
    let Verdict::Reply { bytes, reason, .. } = verdict else {
        panic!("no reply");
    };
    assert_eq!(reason, DropReason::UnknownMethod);
    assert!(
        String::from_utf8_lossy(&bytes).contains(&format!("Allow: {ALLOW}\r\n")),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(gate.stats.unknown_method.load(Ordering::Relaxed), 1);
    assert_eq!(gate.stats.malformed.load(Ordering::Relaxed), 0);
    // A known method with a broken URI is still malformed, not 405.
    let broken = String::from_utf8(options("n"))
        .unwrap()
        .replace("OPTIONS sip:x@127.0.0.1", "OPTIONS sip:@");
    let verdict = gate.inspect(broken.as_bytes(), CALLER.parse().unwrap());
    assert!(
        status_line(&verdict).starts_with("SIP/2.0 400"),
        "{verdict:?}"
    );
}

fn register(call_id: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:alice@192.0.2.7:5070>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn response(code: u16) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKq\r\n\
         From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@192.0.2.7>;tag=2\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A softphone in `registrar.allow` may register, answer what we send it
/// and act within its dialogs, but never call in: a new INVITE from it
/// is an unknown source's, whatever it claims.
#[test]
fn a_softphone_registers_and_answers_but_cannot_call_in() {
    let (gate, _) = gate(UnknownSourcePolicy::Reject, 10);
    gate.set_rules(GateRules {
        acl: Acl::new(vec![("lab".into(), vec!["127.0.0.1/32".parse().unwrap()])]),
        unknown_source: UnknownSourcePolicy::Reject,
        limits: Limits::default(),
        registrar: vec!["192.0.2.0/24".parse().unwrap()],
    });
    let phone: SocketAddr = "192.0.2.7:5070".parse().unwrap();
    let softphone = Verdict::Pass { trunk: "".into() };
    assert_eq!(gate.inspect(&register("r1"), phone), softphone);
    assert_eq!(gate.inspect(&options("o1"), phone), softphone);
    assert_eq!(gate.inspect(&response(180), phone), softphone);
    assert_eq!(
        gate.inspect(&invite("re", true), phone),
        softphone,
        "a re-INVITE"
    );
    let call_in = gate.inspect(&invite("new", false), phone);
    assert_eq!(status_line(&call_in), "SIP/2.0 403 Forbidden");
    // Outside the range, even REGISTER is a stranger's.
    let elsewhere: SocketAddr = "198.51.100.9:5070".parse().unwrap();
    assert_eq!(
        status_line(&gate.inspect(&register("r2"), elsewhere)),
        "SIP/2.0 403 Forbidden"
    );
    assert!(gate.admits_connection(phone.ip()));
    assert!(!gate.admits_connection(elsewhere.ip()));
    // A trunk's source keeps its trunk.
    assert_eq!(
        gate.inspect(&register("r3"), CALLER.parse().unwrap()),
        Verdict::Pass {
            trunk: "lab".into()
        }
    );
}
