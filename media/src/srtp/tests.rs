#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// libsrtp's `srtp_validate()` (test/srtp_driver.c): its master key and
/// salt, RTP and RTCP packets, and what libsrtp makes of them.
fn libsrtp_key() -> MasterKey {
    let mut bytes = [0u8; 30];
    bytes.copy_from_slice(
        &hex::decode("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6").unwrap(),
    );
    MasterKey(bytes)
}

const RTP: &str = "800f1234decafbadcafebabeabababababababababababababababab";
const SRTP_80: &str =
    "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb";
const RTCP: &str = "81c8000bcafebabeabababababababababababababababab";
const SRTCP: &str = "81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798";

fn buffer(hex_text: &str) -> ([u8; 1500], usize) {
    let bytes = hex::decode(hex_text).unwrap();
    let mut buffer = [0u8; 1500];
    buffer[..bytes.len()].copy_from_slice(&bytes);
    (buffer, bytes.len())
}

#[test]
fn rtp_and_rtcp_match_libsrtps_own_vectors() {
    let key = libsrtp_key();
    let mut sender = Protector::new(Suite::AesCm128HmacSha1_80, &key);
    let (mut packet, len) = buffer(RTP);
    let protected = sender.protect_rtp(&mut packet, len).unwrap();
    assert_eq!(hex::encode(&packet[..protected]), SRTP_80);
    let (mut packet, len) = buffer(RTCP);
    let protected = sender.protect_rtcp(&mut packet, len).unwrap();
    assert_eq!(hex::encode(&packet[..protected]), SRTCP);

    let mut receiver = Unprotector::new(Suite::AesCm128HmacSha1_80, &key);
    let mut packet = hex::decode(SRTP_80).unwrap();
    let plain = receiver.unprotect_rtp(&mut packet).unwrap();
    assert_eq!(hex::encode(&packet[..plain]), RTP);
    let mut packet = hex::decode(SRTCP).unwrap();
    let plain = receiver.unprotect_rtcp(&mut packet).unwrap();
    assert_eq!(hex::encode(&packet[..plain]), RTCP);
}

#[test]
fn the_32_bit_suite_has_a_short_rtp_tag_and_the_same_cipher() {
    let key = libsrtp_key();
    let mut sender = Protector::new(Suite::AesCm128HmacSha1_32, &key);
    let (mut packet, len) = buffer(RTP);
    let protected = sender.protect_rtp(&mut packet, len).unwrap();
    assert_eq!(protected, len + 4);
    // The encrypted payload is the 80-bit suite's; only the tag differs.
    assert_eq!(
        hex::encode(&packet[..len]),
        &SRTP_80[..len * 2],
        "same keystream"
    );
    let mut receiver = Unprotector::new(Suite::AesCm128HmacSha1_32, &key);
    let mut srtp = packet[..protected].to_vec();
    assert_eq!(receiver.unprotect_rtp(&mut srtp), Ok(len));
    assert_eq!(hex::encode(&srtp[..len]), RTP);
}

/// RTP packets of one stream: seq, timestamp, 160 bytes of `fill`.
fn rtp(seq: u16, fill: u8) -> ([u8; 1500], usize) {
    let mut packet = [0u8; 1500];
    packet[0] = 0x80;
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
    packet[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    packet[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    packet[12..172].fill(fill);
    (packet, 172)
}

fn pair() -> (Protector, Unprotector) {
    let key = MasterKey::generate().unwrap();
    (
        Protector::new(Suite::AesCm128HmacSha1_80, &key),
        Unprotector::new(Suite::AesCm128HmacSha1_80, &key),
    )
}

#[test]
fn a_tampered_packet_is_refused_and_changes_nothing() {
    let (mut sender, mut receiver) = pair();
    let (mut packet, len) = rtp(7, 0x11);
    let protected = sender.protect_rtp(&mut packet, len).unwrap();
    for at in [1, 3, 20, protected - 1] {
        let mut tampered = packet[..protected].to_vec();
        tampered[at] ^= 0x01;
        assert_eq!(
            receiver.unprotect_rtp(&mut tampered),
            Err(SrtpError::Authentication),
            "byte {at} flipped"
        );
    }
    // The genuine packet still passes: the refusals left no trace.
    let mut genuine = packet[..protected].to_vec();
    assert_eq!(receiver.unprotect_rtp(&mut genuine), Ok(len));
    assert!(genuine[12..172].iter().all(|b| *b == 0x11));
    // Another key is an authentication failure too.
    let (_, mut stranger) = pair();
    let mut again = packet[..protected].to_vec();
    assert_eq!(
        stranger.unprotect_rtp(&mut again),
        Err(SrtpError::Authentication)
    );
    // Too short to hold a tag, or no RTP at all.
    assert_eq!(
        receiver.unprotect_rtp(&mut [0x80; 8]),
        Err(SrtpError::Malformed)
    );
    assert_eq!(
        receiver.unprotect_rtp(&mut [0x00; 40]),
        Err(SrtpError::Malformed)
    );
}

#[test]
fn replays_are_refused_and_late_packets_within_the_window_pass() {
    let (mut sender, mut receiver) = pair();
    let mut sent = Vec::new();
    for seq in 100..200u16 {
        let (mut packet, len) = rtp(seq, seq as u8);
        let protected = sender.protect_rtp(&mut packet, len).unwrap();
        sent.push(packet[..protected].to_vec());
    }
    // In order, except 150 held back.
    for (i, packet) in sent.iter().enumerate() {
        if i != 50 {
            let mut copy = packet.clone();
            assert_eq!(
                receiver.unprotect_rtp(&mut copy),
                Ok(172),
                "seq {}",
                100 + i
            );
        }
    }
    // 150 arrives 49 packets late: inside the window.
    let mut late = sent[50].clone();
    assert_eq!(receiver.unprotect_rtp(&mut late), Ok(172));
    // Every packet again: replays.
    for packet in [&sent[50], &sent[99], &sent[98]] {
        let mut copy = packet.clone();
        assert_eq!(receiver.unprotect_rtp(&mut copy), Err(SrtpError::Replay));
    }
    // Older than the window.
    let mut old = sent[0].clone();
    assert_eq!(receiver.unprotect_rtp(&mut old), Err(SrtpError::Replay));
}

#[test]
fn the_rollover_counter_follows_sequence_wraps_on_both_sides() {
    let (mut sender, mut receiver) = pair();
    for step in 0..70_000u32 {
        let seq = (65_000 + step) as u16;
        let (mut packet, len) = rtp(seq, (step % 251) as u8);
        let protected = sender.protect_rtp(&mut packet, len).unwrap();
        let mut copy = packet[..protected].to_vec();
        assert_eq!(receiver.unprotect_rtp(&mut copy), Ok(172), "step {step}");
        assert!(copy[12..172].iter().all(|b| *b == (step % 251) as u8));
    }
    // A packet from just before the first wrap, late: too old by now.
    let (mut packet, len) = rtp(65_100, 0);
    let mut fresh = Protector::new(Suite::AesCm128HmacSha1_80, &MasterKey::generate().unwrap());
    let protected = fresh.protect_rtp(&mut packet, len).unwrap();
    let mut copy = packet[..protected].to_vec();
    assert!(receiver.unprotect_rtp(&mut copy).is_err());
}

#[test]
fn srtcp_is_authenticated_and_replays_refused() {
    let (mut sender, mut receiver) = pair();
    let (mut packet, len) = buffer(RTCP);
    let first = sender.protect_rtcp(&mut packet, len).unwrap();
    let first = packet[..first].to_vec();
    let (mut packet, len) = buffer(RTCP);
    let second = sender.protect_rtcp(&mut packet, len).unwrap();
    let second = packet[..second].to_vec();
    let mut tampered = second.clone();
    tampered[10] ^= 0x80;
    assert_eq!(
        receiver.unprotect_rtcp(&mut tampered),
        Err(SrtpError::Authentication)
    );
    assert_eq!(receiver.unprotect_rtcp(&mut second.clone()), Ok(len));
    assert_eq!(receiver.unprotect_rtcp(&mut first.clone()), Ok(len));
    assert_eq!(
        receiver.unprotect_rtcp(&mut first.clone()),
        Err(SrtpError::Replay)
    );
    let mut plain = second.clone();
    assert_eq!(receiver.unprotect_rtcp(&mut plain), Err(SrtpError::Replay));
    assert_eq!(
        receiver.unprotect_rtcp(&mut [0x81; 20]),
        Err(SrtpError::Malformed)
    );
}

#[test]
fn a_stream_table_full_of_strangers_keeps_the_real_stream() {
    let (mut sender, mut receiver) = pair();
    let (mut packet, len) = rtp(10, 1);
    let protected = sender.protect_rtp(&mut packet, len).unwrap();
    assert_eq!(
        receiver.unprotect_rtp(&mut packet[..protected].to_vec()),
        Ok(172)
    );
    // Forged packets under other SSRCs fail and are not remembered.
    for ssrc in 0..100u32 {
        let mut forged = packet[..protected].to_vec();
        forged[8..12].copy_from_slice(&ssrc.to_be_bytes());
        assert!(receiver.unprotect_rtp(&mut forged).is_err());
    }
    // The real stream's replay state survived them.
    assert_eq!(
        receiver.unprotect_rtp(&mut packet[..protected].to_vec()),
        Err(SrtpError::Replay)
    );
}

#[test]
fn keys_round_trip_through_inline_and_never_show_in_debug() {
    let key = MasterKey::generate().unwrap();
    let inline = key.inline();
    assert_eq!(inline.len(), 40);
    assert_eq!(MasterKey::from_inline(&inline), Some(key.clone()));
    assert_eq!(format!("{key:?}"), "MasterKey(redacted)");
    assert!(!format!("{key:?}").contains(&inline));
    for bad in ["", "short", "!!!!", &inline[..39], &format!("{inline}AAAA")] {
        assert_eq!(MasterKey::from_inline(bad), None, "{bad:?}");
    }
    assert_ne!(MasterKey::generate().unwrap(), key);
    assert_eq!(
        Suite::from_name("AES_CM_128_HMAC_SHA1_80"),
        Some(Suite::AesCm128HmacSha1_80)
    );
    assert_eq!(Suite::from_name("AEAD_AES_128_GCM"), None);
}

#[test]
fn protection_needs_room_and_rtp() {
    let (mut sender, _) = pair();
    let (mut packet, len) = rtp(1, 0);
    assert_eq!(
        sender.protect_rtp(&mut packet[..len + 5], len),
        Err(SrtpError::Malformed)
    );
    assert_eq!(
        sender.protect_rtp(&mut [0u8; 40], 20),
        Err(SrtpError::Malformed)
    );
    assert_eq!(
        sender.protect_rtcp(&mut [0x81u8; 12], 8),
        Err(SrtpError::Malformed)
    );
}
