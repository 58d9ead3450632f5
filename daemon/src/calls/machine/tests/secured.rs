//! SRTP legs: the caller's trunk policy and offer decide its leg at the
//! start; the callee's policy decides our offer; keys go to the relay, our
//! own stay ours for the whole call, a party's may change by re-INVITE,
//! and no leg changes between SRTP and plain.

use super::*;

const THEIR_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
const THEIR_NEW_KEY: &str = "d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj";

fn with_crypto(body: &str, proto: &str, line: &str) -> String {
    body.replacen("RTP/AVP", proto, 1)
        .replace("a=ptime:20\r\n", &format!("a=ptime:20\r\n{line}"))
}

fn savp_offer(key: &str) -> String {
    with_crypto(
        CALLER_OFFER,
        "RTP/SAVP",
        &format!("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"),
    )
}

fn crypto(tag: u32, suite: Suite, key: &str) -> Crypto {
    Crypto {
        tag,
        suite,
        key: MasterKey::from_inline(key).unwrap(),
    }
}

fn policy(caller: SrtpPolicy) -> Settings {
    Settings {
        caller_srtp: caller,
        ..settings()
    }
}

use tollbridge_media::srtp::Suite;

#[test]
fn an_srtp_caller_gets_our_key_under_its_tag_and_the_callee_a_plain_offer() {
    let mut h = Harness::with(policy(SrtpPolicy::Optional), &savp_offer(THEIR_KEY));
    let suite = Suite::AesCm128HmacSha1_80;
    assert!(has(
        &h.log,
        &Command::Srtp {
            side: Side::Caller,
            receive: Some(crypto(3, suite, THEIR_KEY)),
            send: Some(crypto(3, suite, OUR_CALLER_KEY)),
        }
    ));
    let out = h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    let offer = sdp_of(&out, |c| match c {
        Command::DialCallee(body) => Some(body),
        _ => None,
    });
    assert!(
        offer.contains("RTP/AVP") && !offer.contains("a=crypto"),
        "{offer}"
    );
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    let out = h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    let answer = sdp_of(&out, |c| match c {
        Command::AnswerCaller(body) => Some(body),
        _ => None,
    });
    assert!(answer.contains("m=audio 20000 RTP/SAVP 0"), "{answer}");
    assert!(
        answer.contains(&format!(
            "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{OUR_CALLER_KEY}"
        )),
        "{answer}"
    );
    assert!(
        !out.iter().any(|c| matches!(
            c,
            Command::Srtp {
                side: Side::Callee,
                ..
            }
        )),
        "the callee's leg stays plain"
    );
    assert!(!answer.contains(THEIR_KEY), "their key never echoed");
}

#[test]
fn the_caller_policy_refuses_what_it_must_with_488() {
    let best_effort = with_crypto(
        CALLER_OFFER,
        "RTP/AVP",
        &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}\r\n"),
    );
    for (caller, offer, refused) in [
        (SrtpPolicy::Off, savp_offer(THEIR_KEY), true),
        (SrtpPolicy::Required, CALLER_OFFER.to_owned(), true),
        (SrtpPolicy::Off, best_effort.clone(), false),
        (SrtpPolicy::Required, best_effort, false),
    ] {
        let h = Harness::with(policy(caller), &offer);
        assert_eq!(
            h.log.contains(&Command::RejectCaller { code: 488 }),
            refused,
            "{caller:?}: {:?}",
            h.log
        );
        let secured = h.log.iter().any(|c| matches!(c, Command::Srtp { .. }));
        assert_eq!(
            secured,
            caller == SrtpPolicy::Required && !refused,
            "{caller:?}"
        );
    }
}

#[test]
fn a_required_callee_is_offered_srtp_and_must_answer_with_one_of_our_lines() {
    let dial = || {
        let mut h = Harness::new(CALLER_OFFER);
        h.feed(Input::CalleeSrtp(SrtpPolicy::Required), 0.1);
        let out = h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
        h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
        (h, out)
    };
    let (mut h, out) = dial();
    let offer = sdp_of(&out, |c| match c {
        Command::DialCallee(body) => Some(body),
        _ => None,
    });
    assert!(offer.contains("m=audio 20002 RTP/SAVP 0 8 96"), "{offer}");
    assert!(
        offer.contains(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{OUR_CALLEE_KEY}"
        )) && offer.contains(&format!(
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{OUR_CALLEE_KEY}"
        )),
        "{offer}"
    );
    // It answers with its own key under our tag 2: both directions keyed.
    let answer = String::from_utf8(callee_answer("0 101"))
        .unwrap()
        .replace("RTP/AVP", "RTP/SAVP")
        + &format!("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{THEIR_KEY}\r\n");
    let out = h.feed(Input::CalleeAnswered(answer.into_bytes()), 2.0);
    let suite = Suite::AesCm128HmacSha1_32;
    assert!(
        has(
            &out,
            &Command::Srtp {
                side: Side::Callee,
                receive: Some(crypto(2, suite, THEIR_KEY)),
                send: Some(crypto(2, suite, OUR_CALLEE_KEY)),
            }
        ),
        "{out:?}"
    );
    assert!(!h.call.is_over());

    // A plain answer to it ends the call, saying why.
    let (mut h, _) = dial();
    h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    let end = h.end();
    assert_eq!(end.reason, "no-common-codec");
    assert!(has(&h.log, &Command::RejectCaller { code: 488 }));
    assert!(
        h.log.iter().any(|c| matches!(c, Command::Record(e) if e.detail.as_deref().is_some_and(|d| d.contains("SRTP is required")))),
        "{:?}",
        h.log
    );
}

#[test]
fn a_reoffer_may_change_the_partys_key_but_never_the_legs_kind() {
    let mut h = Harness::with(policy(SrtpPolicy::Optional), &savp_offer(THEIR_KEY));
    h.feed(Input::Routed(Route::Booking("bk_1".into())), 0.1);
    h.feed(Input::CalleePlaced(Ok("out-1".into())), 0.2);
    h.feed(Input::CalleeAnswered(callee_answer("0 101")), 2.0);
    // The same key again: nothing for the relay.
    let out = h.feed(
        Input::CallerReoffer(savp_offer(THEIR_KEY).into_bytes()),
        5.0,
    );
    assert!(
        !out.iter().any(|c| matches!(c, Command::Srtp { .. })),
        "{out:?}"
    );
    // A new key of theirs: only the receiving side changes; we keep ours.
    let out = h.feed(
        Input::CallerReoffer(savp_offer(THEIR_NEW_KEY).into_bytes()),
        6.0,
    );
    assert!(has(
        &out,
        &Command::Srtp {
            side: Side::Caller,
            receive: Some(crypto(3, Suite::AesCm128HmacSha1_80, THEIR_NEW_KEY)),
            send: None,
        }
    ));
    let answer = sdp_of(&out, |c| match c {
        Command::AnswerReoffer(Side::Caller, Ok(body)) => Some(body),
        _ => None,
    });
    assert!(answer.contains(OUR_CALLER_KEY), "{answer}");
    // A plain re-offer on an SRTP leg is a downgrade: refused.
    let out = h.feed(Input::CallerReoffer(CALLER_OFFER.as_bytes().to_vec()), 7.0);
    assert_eq!(out, vec![Command::AnswerReoffer(Side::Caller, Err(488))]);
    assert!(!h.call.is_over());
}
