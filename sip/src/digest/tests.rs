#![allow(clippy::unwrap_used)]

use super::*;

/// RFC 2617 §3.5's example, word for word.
const RFC_2617: &str = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
    nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
    nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", \
    opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

#[test]
fn the_rfc_2617_example_proves_its_password_and_no_other() {
    let credentials = Credentials::parse(RFC_2617).unwrap();
    assert_eq!(credentials.username, "Mufasa");
    assert_eq!(credentials.uri, "/dir/index.html");
    assert_eq!(credentials.nonce_count(), Some(1));
    let right = ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
    assert!(credentials.proves(&right, "GET"));
    let wrong = ha1("Mufasa", "testrealm@host.com", "Circle of Life");
    assert!(!credentials.proves(&wrong, "GET"));
    assert!(!credentials.proves(&right, "POST"), "the method is in it");
}

#[test]
fn a_register_answer_without_qop_is_checked_the_rfc_2069_way() {
    let ha1 = ha1("alice", "tb", "s3cret-password");
    let nonce = "0123";
    let ha2 = md5_hex("REGISTER:sip:tb.example");
    let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
    let header = format!(
        "Digest username=\"alice\",realm=\"tb\",nonce=\"{nonce}\",uri=\"sip:tb.example\",response=\"{}\",algorithm=MD5",
        response.to_uppercase()
    );
    let credentials = Credentials::parse(&header).unwrap();
    assert_eq!(credentials.qop, None);
    assert!(credentials.proves(&ha1, "REGISTER"), "hex in any case");
}

#[test]
fn headers_we_cannot_check_are_named() {
    let table = [
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", "not the Digest scheme"),
        ("Digest", "no parameters"),
        (
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\"",
            "response",
        ),
        ("Digest realm=\"r\", username=\"a", "unterminated"),
        ("Digest username", "without a value"),
        (
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", qop=auth, cnonce=\"c\"",
            "qop without nc",
        ),
        (
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", qop=auth, nc=1, cnonce=\"c\"",
            "8 hex digits",
        ),
        (
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", algorithm=SHA-256",
            "algorithm SHA-256",
        ),
        (
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", qop=auth-int, nc=00000001, cnonce=\"c\"",
            "qop auth-int",
        ),
    ];
    for (header, why) in table {
        let error = Credentials::parse(header).unwrap_err().to_string();
        assert!(error.contains(why), "{header}: {error}");
    }
    // Quoted strings keep their commas and escaped quotes.
    let odd = Credentials::parse(
        "Digest username=\"a\\\"b, c\", realm=\"r\", nonce=\"n\", uri=\"sip:x;a=b,c\", response=\"x\"",
    )
    .unwrap();
    assert_eq!(
        (odd.username.as_str(), odd.uri.as_str()),
        ("a\"b, c", "sip:x;a=b,c")
    );
}

#[test]
fn nonces_are_ours_fresh_then_stale_and_forgeries_are_told_apart() {
    let nonces = Nonces::new(b"a secret shared by the nodes", 300_000);
    let t0 = 1_900_000_000_000;
    let nonce = nonces.issue("tb", t0);
    assert_eq!(nonces.check(&nonce, "tb", t0 + 1_000), NonceCheck::Fresh);
    assert_eq!(nonces.check(&nonce, "tb", t0 + 300_000), NonceCheck::Fresh);
    assert_eq!(nonces.check(&nonce, "tb", t0 + 300_001), NonceCheck::Stale);
    assert_eq!(nonces.check(&nonce, "other", t0), NonceCheck::Forged);
    // Another node with the same secret accepts it; another secret does not.
    let same = Nonces::new(b"a secret shared by the nodes", 300_000);
    assert_eq!(same.check(&nonce, "tb", t0), NonceCheck::Fresh);
    let other = Nonces::new(b"another secret", 300_000);
    assert_eq!(other.check(&nonce, "tb", t0), NonceCheck::Forged);
    // A nonce whose time was moved (to live longer) no longer verifies.
    let moved = format!("{:016x}{}", t0 + 200_000, &nonce[16..]);
    assert_eq!(nonces.check(&moved, "tb", t0 + 400_000), NonceCheck::Forged);
    for junk in ["", "zz", &nonce[..40], &format!("{nonce}00")] {
        assert_eq!(nonces.check(junk, "tb", t0), NonceCheck::Forged, "{junk:?}");
    }
}

#[test]
fn a_replayed_nonce_count_is_refused() {
    let nonces = Nonces::new(b"k", 300_000);
    let t0 = 1_000_000;
    assert!(nonces.first_use("n1", 1, t0));
    assert!(!nonces.first_use("n1", 1, t0 + 10), "the same count again");
    assert!(nonces.first_use("n1", 2, t0 + 20));
    assert!(!nonces.first_use("n1", 1, t0 + 30), "an older count");
    assert!(nonces.first_use("n2", 1, t0 + 30), "counts are per nonce");
    // Past its lifetime a nonce is forgotten (and refused as stale anyway).
    assert!(nonces.first_use("n1", 1, t0 + 300_100));
}

#[test]
fn the_challenge_offers_md5_with_qop_auth() {
    assert_eq!(
        challenge("tb.example", "abc", false),
        "Digest realm=\"tb.example\", nonce=\"abc\", qop=\"auth\", algorithm=MD5"
    );
    assert!(challenge("r", "n", true).ends_with(", stale=true"));
}
