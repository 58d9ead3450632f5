//! SRTP and SRTCP (RFC 3711) with the suites SDES (RFC 4568) keys:
//! AES_CM_128_HMAC_SHA1_80, the one Twilio's Secure Trunking speaks, and
//! AES_CM_128_HMAC_SHA1_32. Sans-IO and in place: a packet is decrypted or
//! encrypted in the buffer it arrived in, with nothing allocated.
//!
//! Why this is ours and not a crate's: the relay decrypts and re-encrypts
//! every packet (to inject prompts, to bridge an SRTP leg to a plain one),
//! and its per-packet path allocates nothing. `webrtc-srtp` (webrtc-rs)
//! and the pure-Rust `libsrtp` return a new buffer or tag `Vec` for every
//! packet; the libsrtp2 binding `srtp` needs bindgen 0.55 and libclang at
//! build time and has not followed libsrtp2's releases. The two suites
//! are small and fully specified, so they are written here on RustCrypto's
//! maintained primitives (`aes` + `ctr` for AES-CM, `hmac` + `sha1`), and
//! checked against libsrtp's own test vectors (`srtp_driver.c`) and, in
//! the suite, against libsrtp2 itself inside PJSIP.
//!
//! What a context keeps per SSRC (up to [`STREAMS`] at once, the least
//! recently used one replaced): the rollover counter and highest sequence
//! number (RFC 3711 §3.3.1, Appendix A) and a 64-packet replay window
//! (§3.3.2) for SRTP, the SRTCP index and its window for SRTCP. A packet
//! that fails authentication or repeats one already seen is refused and
//! leaves the context as it was. Keys never reach a log: [`MasterKey`]'s
//! `Debug` shows none of it, and it is wiped when dropped.

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;

type AesCm = ctr::Ctr128BE<Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// SSRCs a context follows at once: a leg carries its party's stream
/// and, after a re-INVITE or a prompt, one or two more.
pub const STREAMS: usize = 4;

/// The most an outgoing packet grows: an SRTCP index and an 80-bit tag.
pub const MAX_OVERHEAD: usize = 4 + 10;

/// Packets the replay window remembers below the highest seen.
const REPLAY_WINDOW: u64 = 64;

/// An SDES crypto suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// AES-128 in counter mode, 80-bit HMAC-SHA1 tag (Twilio's).
    AesCm128HmacSha1_80,
    /// AES-128 in counter mode, 32-bit HMAC-SHA1 tag on SRTP (SRTCP
    /// keeps 80 bits, RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
}

impl Suite {
    /// Every suite we speak, in our order of preference.
    pub const ALL: [Suite; 2] = [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32];

    /// Its name in an `a=crypto` line.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite an `a=crypto` line names, if we speak it.
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|suite| suite.name() == name)
    }

    fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// SRTCP's tag, 80 bits for both suites.
const RTCP_TAG_LEN: usize = 10;

/// A master key and salt (16 + 14 bytes), what an `a=crypto` line's
/// `inline:` carries.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 30]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Why an SRTP or SRTCP packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Too short, or not RTP/RTCP, or no room for what protection adds.
    #[error("malformed packet")]
    Malformed,
    /// The authentication tag does not match: tampered, or another key.
    #[error("authentication failed")]
    Authentication,
    /// Seen before, or older than the replay window.
    #[error("replayed packet")]
    Replay,
}

impl MasterKey {
    /// A fresh random key from the operating system.
    pub fn generate() -> Result<MasterKey, getrandom::Error> {
        let mut bytes = [0u8; 30];
        getrandom::getrandom(&mut bytes)?;
        Ok(MasterKey(bytes))
    }

    /// The key an `inline:` value carries (base64 of 30 bytes).
    pub fn from_inline(text: &str) -> Option<MasterKey> {
        use base64::Engine;
        let mut bytes = [0u8; 30];
        let decoded = base64::engine::general_purpose::STANDARD
            .decode_slice(text, &mut bytes)
            .ok()?;
        (decoded == 30).then_some(MasterKey(bytes))
    }

    /// The key as an `inline:` value.
    pub fn inline(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    fn key(&self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key.copy_from_slice(&self.0[..16]);
        key
    }

    fn salt(&self) -> [u8; 14] {
        let mut salt = [0u8; 14];
        salt.copy_from_slice(&self.0[16..]);
        salt
    }
}

/// Session keys for one of SRTP or SRTCP (RFC 3711 §4.3).
#[derive(Clone)]
struct SessionKeys {
    cipher: Aes128,
    salt: [u8; 14],
    auth: HmacSha1,
}

impl SessionKeys {
    /// Derives the keys of labels `base` (cipher), `base + 1` (auth) and
    /// `base + 2` (salt) with a key derivation rate of 0.
    fn derive(master: &MasterKey, base: u8) -> SessionKeys {
        let master_cipher = Aes128::new(&master.key().into());
        let master_salt = master.salt();
        let mut key = [0u8; 16];
        let mut auth = [0u8; 64];
        let mut salt = [0u8; 14];
        kdf(&master_cipher, &master_salt, base, &mut key);
        kdf(&master_cipher, &master_salt, base + 1, &mut auth[..20]);
        kdf(&master_cipher, &master_salt, base + 2, &mut salt);
        // HMAC pads a 20-byte key with zeros to its 64-byte block.
        let keys = SessionKeys {
            cipher: Aes128::new(&key.into()),
            salt,
            auth: <HmacSha1 as KeyInit>::new(&auth.into()),
        };
        zeroize::Zeroize::zeroize(&mut key);
        zeroize::Zeroize::zeroize(&mut auth);
        keys
    }

    /// XORs AES-CM keystream for `ssrc` and `index` into `data`.
    fn apply(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (byte, ssrc_byte) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *byte ^= ssrc_byte;
        }
        for (byte, index_byte) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *byte ^= index_byte;
        }
        let mut keystream =
            AesCm::from_core(ctr::CtrCore::inner_iv_init(self.cipher.clone(), &iv.into()));
        keystream.apply_keystream(data);
    }
}

/// The key derivation function of RFC 3711 §4.3.1: AES-CM of the master
/// key over `(label << 48) XOR master_salt`, shifted 16 bits.
fn kdf(master: &Aes128, master_salt: &[u8; 14], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    let mut keystream = AesCm::from_core(ctr::CtrCore::inner_iv_init(master.clone(), &iv.into()));
    keystream.apply_keystream(out);
}

/// What a context remembers of one SSRC.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    /// Whether an RTP packet of it was accepted (a stream first seen in
    /// SRTCP has no sequence number yet).
    rtp_seen: bool,
    /// Rollover counter and highest sequence number (`s_l`).
    roc: u32,
    highest_seq: u16,
    /// Packets seen at and below the highest index (bit 0: the highest).
    window: u64,
    /// SRTCP: the next index we send, or the highest index received and
    /// its window.
    rtcp_index: u32,
    rtcp_window: u64,
    rtcp_seen: bool,
    /// When it was last used, for replacing the least recent.
    used: u64,
}

impl Stream {
    fn new(ssrc: u32, seq: u16) -> Stream {
        Stream {
            ssrc,
            rtp_seen: false,
            roc: 0,
            highest_seq: seq,
            window: 0,
            rtcp_index: 0,
            rtcp_window: 0,
            rtcp_seen: false,
            used: 0,
        }
    }

    /// The packet index of `seq` (RFC 3711 Appendix A), or `None` when it
    /// would come before the first rollover.
    fn estimate(&self, seq: u16) -> Option<u64> {
        if !self.rtp_seen {
            return Some(u64::from(seq));
        }
        let (s_l, seq32) = (i32::from(self.highest_seq), i32::from(seq));
        let roc = if s_l < 32_768 {
            if seq32 - s_l > 32_768 {
                self.roc.checked_sub(1)?
            } else {
                self.roc
            }
        } else if s_l - 32_768 > seq32 {
            self.roc.checked_add(1)?
        } else {
            self.roc
        };
        Some((u64::from(roc) << 16) | u64::from(seq))
    }

    fn highest_index(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.highest_seq)
    }

    /// Whether `index` was seen or fell out of the window.
    fn replayed(&self, index: u64) -> bool {
        if !self.rtp_seen {
            return false;
        }
        let highest = self.highest_index();
        if index > highest {
            return false;
        }
        let behind = highest - index;
        behind >= REPLAY_WINDOW || self.window & (1 << behind) != 0
    }

    /// Records `index` as seen, moving the highest index forward.
    fn accept(&mut self, index: u64) {
        let highest = self.highest_index();
        if !self.rtp_seen {
            self.rtp_seen = true;
            self.window = 1;
            self.roc = (index >> 16) as u32;
            self.highest_seq = (index & 0xffff) as u16;
        } else if index > highest {
            let ahead = index - highest;
            self.window = if ahead >= REPLAY_WINDOW {
                1
            } else {
                (self.window << ahead) | 1
            };
            self.roc = (index >> 16) as u32;
            self.highest_seq = (index & 0xffff) as u16;
        } else {
            self.window |= 1 << (highest - index);
        }
    }
}

/// The SSRCs a context follows.
#[derive(Debug, Clone)]
struct Streams {
    streams: [Option<Stream>; STREAMS],
    clock: u64,
}

impl Streams {
    fn new() -> Streams {
        Streams {
            streams: [None; STREAMS],
            clock: 0,
        }
    }

    /// A copy of the stream of `ssrc`, or a new one starting at `seq`.
    fn lookup(&self, ssrc: u32, seq: u16) -> Stream {
        self.streams
            .iter()
            .flatten()
            .find(|s| s.ssrc == ssrc)
            .copied()
            .unwrap_or_else(|| Stream::new(ssrc, seq))
    }

    /// Keeps `stream` as its SSRC's state (replacing the least recently
    /// used stream when all are taken). Called only for a packet that was
    /// accepted, so refused packets cannot push a real stream out.
    fn store(&mut self, mut stream: Stream) {
        self.clock += 1;
        stream.used = self.clock;
        let slot = self
            .streams
            .iter()
            .position(|s| s.is_some_and(|s| s.ssrc == stream.ssrc))
            .or_else(|| self.streams.iter().position(Option::is_none))
            .or_else(|| {
                self.streams
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.map_or(0, |s| s.used))
                    .map(|(i, _)| i)
            })
            .unwrap_or(0);
        self.streams[slot] = Some(stream);
    }
}

/// Where an RTP packet's payload starts (after CSRCs and any header
/// extension), or `None` when `packet` is no RTP version 2 packet.
fn rtp_payload_offset(packet: &[u8]) -> Option<usize> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut offset = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(offset + 2..offset + 4)?;
        offset += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (offset <= packet.len()).then_some(offset)
}

fn ssrc_at(packet: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
}

/// Protects what we send to one party, with our key for it.
#[derive(Clone)]
pub struct Protector {
    suite: Suite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    streams: Streams,
}

impl Protector {
    /// A context sending with `key` in `suite`.
    pub fn new(suite: Suite, key: &MasterKey) -> Protector {
        Protector {
            suite,
            rtp: SessionKeys::derive(key, 0),
            rtcp: SessionKeys::derive(key, 3),
            streams: Streams::new(),
        }
    }

    /// Encrypts and signs the RTP packet in `buffer[..len]` in place;
    /// the SRTP packet's length (`len` plus the tag; `buffer` must have
    /// the room).
    pub fn protect_rtp(&mut self, buffer: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let packet = buffer.get(..len).ok_or(SrtpError::Malformed)?;
        let payload = rtp_payload_offset(packet).ok_or(SrtpError::Malformed)?;
        if buffer.len() < len + tag_len {
            return Err(SrtpError::Malformed);
        }
        let seq = u16::from_be_bytes([buffer[2], buffer[3]]);
        let ssrc = ssrc_at(buffer, 8);
        let mut stream = self.streams.lookup(ssrc, seq);
        let index = stream.estimate(seq).ok_or(SrtpError::Malformed)?;
        stream.accept(index);
        self.streams.store(stream);
        let roc = (index >> 16) as u32;
        self.rtp.apply(ssrc, index, &mut buffer[payload..len]);
        let mut mac = self.rtp.auth.clone();
        mac.update(&buffer[..len]);
        mac.update(&roc.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        buffer[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
        Ok(len + tag_len)
    }

    /// Encrypts and signs the RTCP packet in `buffer[..len]` in place
    /// (index and tag appended); the SRTCP packet's length.
    pub fn protect_rtcp(&mut self, buffer: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < 8 || buffer.len() < len + 4 + RTCP_TAG_LEN || buffer[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = ssrc_at(buffer, 4);
        let mut stream = self.streams.lookup(ssrc, 0);
        stream.rtcp_index = (stream.rtcp_index + 1) & 0x7fff_ffff;
        let index = stream.rtcp_index;
        self.streams.store(stream);
        self.rtcp.apply(ssrc, u64::from(index), &mut buffer[8..len]);
        buffer[len..len + 4].copy_from_slice(&(index | 0x8000_0000).to_be_bytes());
        let signed = len + 4;
        let mut mac = self.rtcp.auth.clone();
        mac.update(&buffer[..signed]);
        let tag = mac.finalize().into_bytes();
        buffer[signed..signed + RTCP_TAG_LEN].copy_from_slice(&tag[..RTCP_TAG_LEN]);
        Ok(signed + RTCP_TAG_LEN)
    }
}

/// Checks and decrypts what one party sends us, with its key.
#[derive(Clone)]
pub struct Unprotector {
    suite: Suite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    streams: Streams,
}

impl Unprotector {
    /// A context receiving with the party's `key` in `suite`.
    pub fn new(suite: Suite, key: &MasterKey) -> Unprotector {
        Unprotector {
            suite,
            rtp: SessionKeys::derive(key, 0),
            rtcp: SessionKeys::derive(key, 3),
            streams: Streams::new(),
        }
    }

    /// Authenticates and decrypts the SRTP packet `packet` in place; the
    /// RTP packet's length (its start). A refused packet changes nothing.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let len = packet
            .len()
            .checked_sub(tag_len)
            .ok_or(SrtpError::Malformed)?;
        let payload = rtp_payload_offset(&packet[..len]).ok_or(SrtpError::Malformed)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = ssrc_at(packet, 8);
        let mut stream = self.streams.lookup(ssrc, seq);
        let index = stream.estimate(seq).ok_or(SrtpError::Replay)?;
        if stream.replayed(index) {
            return Err(SrtpError::Replay);
        }
        let roc = (index >> 16) as u32;
        let mut mac = self.rtp.auth.clone();
        mac.update(&packet[..len]);
        mac.update(&roc.to_be_bytes());
        mac.verify_truncated_left(&packet[len..])
            .map_err(|_| SrtpError::Authentication)?;
        stream.accept(index);
        self.streams.store(stream);
        self.rtp.apply(ssrc, index, &mut packet[payload..len]);
        Ok(len)
    }

    /// Authenticates and decrypts the SRTCP packet `packet` in place; the
    /// RTCP packet's length.
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let signed = packet
            .len()
            .checked_sub(RTCP_TAG_LEN)
            .ok_or(SrtpError::Malformed)?;
        let len = signed.checked_sub(4).ok_or(SrtpError::Malformed)?;
        if len < 8 || packet[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let word = ssrc_at(packet, len);
        let (encrypted, index) = (word & 0x8000_0000 != 0, word & 0x7fff_ffff);
        let ssrc = ssrc_at(packet, 4);
        let mut stream = self.streams.lookup(ssrc, 0);
        if stream.rtcp_seen && index <= stream.rtcp_index {
            let behind = u64::from(stream.rtcp_index - index);
            if behind >= REPLAY_WINDOW || stream.rtcp_window & (1 << behind) != 0 {
                return Err(SrtpError::Replay);
            }
        }
        let mut mac = self.rtcp.auth.clone();
        mac.update(&packet[..signed]);
        mac.verify_truncated_left(&packet[signed..])
            .map_err(|_| SrtpError::Authentication)?;
        if !stream.rtcp_seen || index > stream.rtcp_index {
            let ahead = if stream.rtcp_seen {
                u64::from(index - stream.rtcp_index)
            } else {
                REPLAY_WINDOW
            };
            stream.rtcp_window = if ahead >= REPLAY_WINDOW {
                1
            } else {
                (stream.rtcp_window << ahead) | 1
            };
            stream.rtcp_index = index;
            stream.rtcp_seen = true;
        } else {
            stream.rtcp_window |= 1 << (stream.rtcp_index - index);
        }
        self.streams.store(stream);
        if encrypted {
            self.rtcp.apply(ssrc, u64::from(index), &mut packet[8..len]);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests;
