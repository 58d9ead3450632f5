#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const PHONE_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 8 0 18 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:18 G729/8000\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\na=ptime:20\r\n";

#[test]
fn a_phone_offer_is_read() {
    let stream = AudioStream::parse(PHONE_OFFER.as_bytes()).unwrap();
    assert_eq!(stream.rtp, Some("192.0.2.10:40000".parse().unwrap()));
    assert_eq!(stream.rtcp, Some("192.0.2.10:40001".parse().unwrap()));
    assert_eq!(stream.codecs, vec![Codec::Pcma, Codec::Pcmu]);
    assert_eq!(stream.telephone_event, Some(96));
    assert_eq!(stream.ptime, Some(20));
    assert_eq!(stream.direction, Direction::SendRecv);
}

#[test]
fn hold_forms_and_rtcp_attribute_are_read() {
    let sendonly = PHONE_OFFER.replace(
        "a=ptime:20\r\n",
        "a=ptime:20\r\na=sendonly\r\na=rtcp:40011\r\n",
    );
    let stream = AudioStream::parse(sendonly.as_bytes()).unwrap();
    assert_eq!(stream.direction, Direction::SendOnly);
    assert_eq!(stream.rtcp, Some("192.0.2.10:40011".parse().unwrap()));
    // RFC 2543 hold: c=0.0.0.0.
    let old = PHONE_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
    let stream = AudioStream::parse(old.as_bytes()).unwrap();
    assert_eq!(stream.direction, Direction::Inactive);
    assert_eq!(stream.rtp, None);
}

#[test]
fn bad_bodies_are_refused_with_a_reason() {
    let cases: &[(&str, SdpError)] = &[
        (
            "m=audio 1 RTP/AVP 0\r\n",
            SdpError::Unparseable(String::new()),
        ),
        (
            "v=0\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n",
            SdpError::NoAudio,
        ),
        (
            "v=0\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n",
            SdpError::NoAudio,
        ),
        (
            "v=0\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n",
            SdpError::NoAddress,
        ),
        (
            "v=0\r\ns=-\r\nc=IN IP4 nowhere\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n",
            SdpError::NoAddress,
        ),
    ];
    for (body, expected) in cases {
        let got = AudioStream::parse(body.as_bytes()).unwrap_err();
        match expected {
            SdpError::Unparseable(_) => {
                assert!(matches!(got, SdpError::Unparseable(_)), "{body}: {got:?}")
            }
            other => assert_eq!(&got, other, "{body}"),
        }
    }
    // Garbage of any shape never panics.
    for body in [
        &b"\xff\xfe"[..],
        b"",
        b"v=0",
        b"v=0\r\nm=audio x RTP/AVP 0\r\n",
    ] {
        assert!(AudioStream::parse(body).is_err());
    }
}

#[test]
fn an_offer_without_g711_has_no_common_codec() {
    let g729 = PHONE_OFFER.replace("RTP/AVP 8 0 18 96", "RTP/AVP 18 96");
    let stream = AudioStream::parse(g729.as_bytes()).unwrap();
    assert!(stream.codecs.is_empty());
    let relay = "203.0.113.5:20000".parse().unwrap();
    assert_eq!(
        offer_for_callee(&stream, relay),
        Err(SdpError::NoCommonCodec)
    );
}

#[test]
fn offer_answer_round_trip_keeps_codec_dtmf_ptime_and_direction() {
    let caller = AudioStream::parse(PHONE_OFFER.as_bytes()).unwrap();
    let callee_relay = "203.0.113.5:20002".parse().unwrap();
    let offer = offer_for_callee(&caller, callee_relay).unwrap();
    let mut writer = SdpWriter::new(7);
    let body = writer.render(&offer);
    // What we wrote reads back as what we meant.
    let read = AudioStream::parse(&body).unwrap();
    assert_eq!(read.rtp, Some(callee_relay));
    assert_eq!(read.codecs, vec![Codec::Pcma, Codec::Pcmu]);
    assert_eq!(read.telephone_event, Some(96));
    assert_eq!(read.ptime, Some(20));
    // The callee answers PCMU and DTMF on 101.
    let answer = AudioStream::parse(
        b"v=0\r\no=- 2 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    )
    .unwrap();
    let codec = chosen_codec(&offer, &answer).unwrap();
    assert_eq!(codec, Codec::Pcmu);
    let caller_relay = "203.0.113.5:20000".parse().unwrap();
    let ours = answer_to(
        &caller,
        codec,
        answer.telephone_event.is_some(),
        caller_relay,
        None,
    )
    .unwrap();
    assert_eq!(ours.codecs, vec![Codec::Pcmu]);
    assert_eq!(ours.telephone_event, Some(96), "the caller's own number");
    let body = String::from_utf8(writer.render(&ours)).unwrap();
    assert!(
        body.contains("o=tollbridge 7 2 IN IP4 203.0.113.5"),
        "{body}"
    );
    assert!(body.contains("m=audio 20000 RTP/AVP 0 96\r\n"), "{body}");
    assert!(body.contains("a=sendrecv"), "{body}");
    // A hold offer gets recvonly back.
    let hold = AudioStream {
        direction: Direction::SendOnly,
        ..caller.clone()
    };
    let ours = answer_to(&hold, codec, true, caller_relay, None).unwrap();
    assert_eq!(ours.direction, Direction::RecvOnly);
    // A re-offer without the agreed codec is refused.
    let pcma_only = AudioStream {
        codecs: vec![Codec::Pcma],
        ..caller
    };
    assert_eq!(
        answer_to(&pcma_only, Codec::Pcmu, true, caller_relay, None),
        Err(SdpError::NoCommonCodec)
    );
}

#[test]
fn an_answer_with_a_codec_we_did_not_offer_is_refused() {
    let caller = AudioStream::parse(PHONE_OFFER.replace("8 0 18 96", "0 96").as_bytes()).unwrap();
    let offer = offer_for_callee(&caller, "203.0.113.5:20002".parse().unwrap()).unwrap();
    let answer = AudioStream::parse(
        b"v=0\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8\r\n",
    )
    .unwrap();
    assert_eq!(chosen_codec(&offer, &answer), Err(SdpError::NoCommonCodec));
}

#[test]
fn offers_we_cannot_honour_are_refused_naming_why() {
    let cases: &[(&str, &str)] = &[
        // Only SRTP, or only WebRTC's profile: no plain-RTP answer works.
        (
            "m=audio 40000 RTP/AVP 8 0 18 96",
            "audio is offered only as RTP/SAVP",
        ),
        (
            "m=audio 40000 RTP/AVP 8 0 18 96",
            "audio is offered only as UDP/TLS/RTP/SAVPF",
        ),
        ("c=IN IP4 192.0.2.10", "224.0.0.1 is a multicast group"),
        (
            "c=IN IP4 192.0.2.10",
            "a multicast group (TTL or count given)",
        ),
        (
            "c=IN IP4 192.0.2.10",
            "255.255.255.255 is the broadcast address",
        ),
        ("c=IN IP4 192.0.2.10", "2001:db8::1 is not an IP4 address"),
        ("c=IN IP4 192.0.2.10", "192.0.2.10 is not an IP6 address"),
        ("c=IN IP4 192.0.2.10", "network type \"ATM\" is not IN"),
    ];
    let replacements = [
        "m=audio 40000 RTP/SAVP 8 0 18 96",
        "m=audio 40000 UDP/TLS/RTP/SAVPF 8 0 18 96",
        "c=IN IP4 224.0.0.1",
        "c=IN IP4 224.2.1.1/127",
        "c=IN IP4 255.255.255.255",
        "c=IN IP4 2001:db8::1",
        "c=IN IP6 192.0.2.10",
        "c=ATM IP4 192.0.2.10",
    ];
    for ((original, reason), replacement) in cases.iter().zip(replacements) {
        let body = PHONE_OFFER.replacen(original, replacement, 2);
        let error = AudioStream::parse(body.as_bytes()).unwrap_err();
        assert!(
            matches!(error, SdpError::Profile(_) | SdpError::BadAddress(_)),
            "{replacement}: {error:?}"
        );
        assert!(error.to_string().contains(reason), "{replacement}: {error}");
    }
    // An SRTP line next to a plain one (best-effort offers): the plain one.
    let both = PHONE_OFFER.replace(
        "m=audio 40000 RTP/AVP 8 0 18 96\r\n",
        "m=audio 40002 RTP/SAVP 0\r\nm=audio 40000 RTP/AVP 8 0 18 96\r\n",
    );
    let stream = AudioStream::parse(both.as_bytes()).unwrap();
    assert_eq!((stream.index, stream.rtp.unwrap().port()), (1, 40000));
}

#[test]
fn every_offered_m_line_is_answered_in_place_the_extra_ones_refused() {
    // Video first, then audio: the answer has both, video with port 0.
    let offer = PHONE_OFFER.replace(
        "m=audio 40000",
        "m=video 40010 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 40000",
    );
    let caller = AudioStream::parse(offer.as_bytes()).unwrap();
    assert_eq!(caller.index, 1);
    let relay = "203.0.113.5:20000".parse().unwrap();
    let ours = answer_to(&caller, Codec::Pcma, true, relay, None).unwrap();
    let body = String::from_utf8(SdpWriter::new(1).render(&ours)).unwrap();
    let m_lines: Vec<&str> = body.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        m_lines,
        ["m=video 0 RTP/AVP 96", "m=audio 20000 RTP/AVP 8 96"],
        "{body}"
    );
    // Our answer reads back as the audio stream it answers.
    let read = AudioStream::parse(body.as_bytes()).unwrap();
    assert_eq!(read.rtp, Some(relay));
    // Our own offer to the callee has just the one audio line.
    let offer = offer_for_callee(&caller, relay).unwrap();
    let body = String::from_utf8(SdpWriter::new(2).render(&offer)).unwrap();
    assert_eq!(body.matches("m=").count(), 1, "{body}");
}

/// Twilio's Secure Trunking offer shape: RTP/SAVP, one 80-bit line.
const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
const KEY_B: &str = "d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj";

fn srtp_offer(proto: &str, crypto_lines: &str) -> String {
    PHONE_OFFER
        .replace("RTP/AVP", proto)
        .replace("a=ptime:20\r\n", &format!("a=ptime:20\r\n{crypto_lines}"))
}

#[test]
fn an_srtp_offer_is_read_with_the_crypto_lines_we_can_use() {
    let lines = format!(
        "a=crypto:1 AES_CM_256_HMAC_SHA1_80 inline:{KEY_A}\r\n\
         a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^31|1:4\r\n\
         a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} KDR=1\r\n\
         a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:short\r\n\
         a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B}|2^31\r\n\
         a=crypto:6 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n\
         a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n"
    );
    let stream = AudioStream::parse(srtp_offer("RTP/SAVP", &lines).as_bytes()).unwrap();
    assert!(stream.secure);
    // Another suite, an MKI, session parameters, a bad key or tag: skipped.
    let tags: Vec<(u32, Suite)> = stream.crypto.iter().map(|c| (c.tag, c.suite)).collect();
    assert_eq!(
        tags,
        [
            (5, Suite::AesCm128HmacSha1_32),
            (6, Suite::AesCm128HmacSha1_80)
        ]
    );
    assert_eq!(stream.crypto[1].key.inline(), KEY_A);
    // SRTP with no line we can use is refused, naming what would do.
    let unusable = srtp_offer(
        "RTP/SAVP",
        &format!("a=crypto:1 AEAD_AES_128_GCM inline:{KEY_A}\r\n"),
    );
    let error = AudioStream::parse(unusable.as_bytes()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("RTP/SAVP with an AES_CM_128_HMAC_SHA1_80"),
        "{error}"
    );
    // Best-effort SRTP: plain RTP/AVP with a crypto line.
    let best_effort = srtp_offer(
        "RTP/AVP",
        &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n"),
    );
    let stream = AudioStream::parse(best_effort.as_bytes()).unwrap();
    assert!(!stream.secure);
    assert_eq!(stream.crypto.len(), 1);
}

#[test]
fn the_leg_policy_decides_between_srtp_plain_and_488() {
    let line = format!("a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n");
    let savp = AudioStream::parse(srtp_offer("RTP/SAVP", &line).as_bytes()).unwrap();
    let best_effort = AudioStream::parse(srtp_offer("RTP/AVP", &line).as_bytes()).unwrap();
    let plain = AudioStream::parse(PHONE_OFFER.as_bytes()).unwrap();
    let tag = |r: Result<Option<Crypto>, SdpError>| r.map(|c| c.map(|c| c.tag));
    let table = [
        (&savp, SrtpPolicy::Off, Err(SdpError::SrtpOff)),
        (&savp, SrtpPolicy::Optional, Ok(Some(7))),
        (&savp, SrtpPolicy::Required, Ok(Some(7))),
        (&best_effort, SrtpPolicy::Off, Ok(None)),
        (&best_effort, SrtpPolicy::Optional, Ok(Some(7))),
        (&best_effort, SrtpPolicy::Required, Ok(Some(7))),
        (&plain, SrtpPolicy::Off, Ok(None)),
        (&plain, SrtpPolicy::Optional, Ok(None)),
        (&plain, SrtpPolicy::Required, Err(SdpError::SrtpRequired)),
    ];
    for (offer, policy, expected) in table {
        assert_eq!(
            tag(negotiate_crypto(offer, policy)),
            expected,
            "{policy:?} secure={} lines={}",
            offer.secure,
            offer.crypto.len()
        );
    }
    // A leg whose SRTP is off takes the plain line of an offer with both.
    let both = srtp_offer("RTP/SAVP", &line).replace(
        "m=audio 40000 RTP/SAVP",
        "m=audio 40002 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\nm=audio 40000 RTP/AVP",
    );
    let stream = AudioStream::parse_with(both.as_bytes(), false).unwrap();
    assert_eq!((stream.index, stream.secure), (1, false));
    let stream = AudioStream::parse_with(both.as_bytes(), true).unwrap();
    assert_eq!((stream.index, stream.secure), (0, true));
}

#[test]
fn our_answer_and_offer_carry_our_key_and_read_back() {
    let line = format!("a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\r\n");
    let offer = AudioStream::parse(srtp_offer("RTP/SAVP", &line).as_bytes()).unwrap();
    let theirs = negotiate_crypto(&offer, SrtpPolicy::Optional)
        .unwrap()
        .unwrap();
    let ours = MasterKey::from_inline(KEY_B).unwrap();
    let relay = "203.0.113.5:20000".parse().unwrap();
    let answer = answer_to(
        &offer,
        Codec::Pcma,
        false,
        relay,
        Some(answering_crypto(&theirs, &ours)),
    )
    .unwrap();
    let body = String::from_utf8(SdpWriter::new(1).render(&answer)).unwrap();
    assert!(body.contains("m=audio 20000 RTP/SAVP 8\r\n"), "{body}");
    assert!(
        body.contains(&format!(
            "a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B}\r\n"
        )),
        "{body}"
    );
    let read = AudioStream::parse(body.as_bytes()).unwrap();
    assert_eq!(read.crypto, vec![answering_crypto(&theirs, &ours)]);

    // Our SRTP offer: both suites, 80 first; the answer picks one by tag.
    let caller = AudioStream::parse(PHONE_OFFER.as_bytes()).unwrap();
    let mut ours_offer = offer_for_callee(&caller, relay).unwrap();
    ours_offer.secure = true;
    ours_offer.crypto = offered_crypto(&ours);
    let body = String::from_utf8(SdpWriter::new(2).render(&ours_offer)).unwrap();
    assert!(body.contains("RTP/SAVP"), "{body}");
    assert!(
        body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{body}"
    );
    assert!(
        body.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"),
        "{body}"
    );
    let answer_with = |tag_suite: &str| {
        AudioStream::parse(
            srtp_offer(
                "RTP/SAVP",
                &format!("a=crypto:{tag_suite} inline:{KEY_A}\r\n"),
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let (taken, theirs) = answered_crypto(&ours_offer, &answer_with("2 AES_CM_128_HMAC_SHA1_32"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (taken.tag, taken.suite, theirs.tag),
        (2, Suite::AesCm128HmacSha1_32, 2)
    );
    // A tag we never offered, or the wrong suite under ours: refused.
    for wrong in ["3 AES_CM_128_HMAC_SHA1_80", "1 AES_CM_128_HMAC_SHA1_32"] {
        assert_eq!(
            answered_crypto(&ours_offer, &answer_with(wrong)),
            Err(SdpError::SrtpRequired),
            "{wrong}"
        );
    }
    // A plain answer to an SRTP offer is refused; to a plain offer, fine.
    let plain = AudioStream::parse(PHONE_OFFER.as_bytes()).unwrap();
    assert_eq!(
        answered_crypto(&ours_offer, &plain),
        Err(SdpError::SrtpRequired)
    );
    let plain_offer = offer_for_callee(&caller, relay).unwrap();
    assert_eq!(answered_crypto(&plain_offer, &plain), Ok(None));
}
