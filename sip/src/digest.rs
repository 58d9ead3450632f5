//! Digest authentication of requests we receive (RFC 3261 §22.4, RFC
//! 2617's `qop=auth`), checked against a stored HA1 so that no password is
//! ever kept in clear: the challenge, stateless nonces, and the check of an
//! `Authorization` header. Sans-IO: time comes in as Unix milliseconds.
//!
//! Written here rather than taken from rsipstack: its digest helper needs
//! the password itself (we keep HA1 only), and its header parser turns
//! `uri` into a `Uri` and back, while the response is computed over the
//! exact text the client sent, and reads `nc` as one byte.
//!
//! A nonce is its issue time and an HMAC-SHA256 of that time and the realm
//! under a secret the nodes share (from the ledger): any node can check a
//! nonce another issued, and nothing is stored per challenge. A nonce past
//! its lifetime gets a new challenge with `stale=true` (the client retries
//! without asking its user). A replayed answer (a nonce count not above the
//! last one seen for that nonce) is refused; the counts are kept per node
//! for the nonces' lifetime.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// HA1 for MD5 digest: `MD5(username ":" realm ":" password)`, lowercase
/// hex. What the ledger keeps instead of a password.
pub fn ha1(username: &str, realm: &str, password: &str) -> String {
    md5_hex(&format!("{username}:{realm}:{password}"))
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// A `WWW-Authenticate` value offering MD5 digest with `qop=auth`.
pub fn challenge(realm: &str, nonce: &str, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5{stale}")
}

/// What an `Authorization: Digest ...` header says, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri`, exactly as written.
    pub uri: String,
    /// `response`: 32 hex digits.
    pub response: String,
    /// `qop=auth` with its `nc` (as written, 8 hex digits) and `cnonce`;
    /// `None` for RFC 2069 answers without qop.
    pub qop: Option<(String, String)>,
}

/// Why an `Authorization` header is not one we can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not `Digest`, or its parameters do not parse.
    #[error("not a digest authorization: {0}")]
    Malformed(&'static str),
    /// An algorithm other than MD5, or a qop other than `auth`.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Splits `k=v, k="v", ...` (quoted strings may hold commas and escaped
/// quotes).
fn parameters(text: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or(DigestError::Malformed("a parameter without a value"))?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or(DigestError::Malformed("an unterminated quoted string"))?;
            (value, &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((name, value));
        rest = remaining.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

impl Credentials {
    /// Reads an `Authorization` header value.
    pub fn parse(header: &str) -> Result<Credentials, DigestError> {
        let header = header.trim();
        let (scheme, rest) = header
            .split_once(char::is_whitespace)
            .ok_or(DigestError::Malformed("no parameters"))?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::Malformed("not the Digest scheme"));
        }
        let params = parameters(rest)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(algorithm) = get("algorithm")
            && !algorithm.eq_ignore_ascii_case("md5")
        {
            return Err(DigestError::Unsupported(format!("algorithm {algorithm}")));
        }
        let qop = match get("qop") {
            None => None,
            Some(qop) if qop.eq_ignore_ascii_case("auth") => Some((
                get("nc").ok_or(DigestError::Malformed("qop without nc"))?,
                get("cnonce").ok_or(DigestError::Malformed("qop without cnonce"))?,
            )),
            Some(other) => return Err(DigestError::Unsupported(format!("qop {other}"))),
        };
        if let Some((nc, _)) = &qop
            && (nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(DigestError::Malformed("nc is not 8 hex digits"));
        }
        let required = |name: &'static str| get(name).ok_or(DigestError::Malformed(name));
        Ok(Credentials {
            username: required("username")?,
            realm: required("realm")?,
            nonce: required("nonce")?,
            uri: required("uri")?,
            response: required("response")?,
            qop,
        })
    }

    /// The response a client holding the password behind `ha1` sends for
    /// a request with `method`.
    pub fn expected_response(&self, ha1: &str, method: &str) -> String {
        let ha2 = md5_hex(&format!("{method}:{}", self.uri));
        match &self.qop {
            Some((nc, cnonce)) => {
                md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
            }
            None => md5_hex(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }

    /// Whether the response proves the password behind `ha1` (compared in
    /// constant time).
    pub fn proves(&self, ha1: &str, method: &str) -> bool {
        let expected = self.expected_response(ha1, method);
        let given = self.response.to_ascii_lowercase();
        expected.len() == given.len()
            && expected
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// The nonce count, when the answer has one.
    pub fn nonce_count(&self) -> Option<u32> {
        self.qop
            .as_ref()
            .and_then(|(nc, _)| u32::from_str_radix(nc, 16).ok())
    }
}

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, within its lifetime.
    Fresh,
    /// Ours, but too old: challenge again with `stale=true`.
    Stale,
    /// Not ours (or for another realm): a forgery or a mistake.
    Forged,
}

type HmacSha256 = Hmac<Sha256>;

/// Per nonce: when it was first seen, and the highest count since.
type NonceCounts = HashMap<String, (u64, u32)>;

/// Issues and checks nonces; remembers the highest nonce count seen per
/// nonce, to refuse replays.
pub struct Nonces {
    secret: Vec<u8>,
    lifetime_ms: u64,
    /// Per nonce (first seen, highest count), and when it was last swept.
    counts: Mutex<(NonceCounts, u64)>,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime_ms", &self.lifetime_ms)
            .finish()
    }
}

/// How often forgotten nonces are swept out of the replay table.
const SWEEP_MS: u64 = 60_000;

/// Bytes of the HMAC kept in a nonce.
const MAC_BYTES: usize = 16;

impl Nonces {
    /// Nonces under `secret` (shared by the nodes), good for `lifetime_ms`.
    pub fn new(secret: &[u8], lifetime_ms: u64) -> Nonces {
        Nonces {
            secret: secret.to_vec(),
            lifetime_ms,
            counts: Mutex::new((HashMap::new(), 0)),
        }
    }

    fn mac(&self, issued_ms: u64, realm: &str) -> Vec<u8> {
        // HMAC takes a key of any length.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => return Vec::new(),
        };
        mac.update(&issued_ms.to_be_bytes());
        mac.update(realm.as_bytes());
        mac.finalize().into_bytes()[..MAC_BYTES].to_vec()
    }

    /// A new nonce for `realm`, issued at `now_ms`.
    pub fn issue(&self, realm: &str, now_ms: u64) -> String {
        format!("{now_ms:016x}{}", hex::encode(self.mac(now_ms, realm)))
    }

    /// Whether `nonce` is one of ours for `realm`, and still good.
    pub fn check(&self, nonce: &str, realm: &str, now_ms: u64) -> NonceCheck {
        if nonce.len() != 16 + 2 * MAC_BYTES {
            return NonceCheck::Forged;
        }
        let (Some(time), Some(mac)) = (nonce.get(..16), nonce.get(16..)) else {
            return NonceCheck::Forged;
        };
        let (Ok(issued), Ok(mac)) = (u64::from_str_radix(time, 16), hex::decode(mac)) else {
            return NonceCheck::Forged;
        };
        let expected = self.mac(issued, realm);
        let same = expected.len() == mac.len()
            && expected
                .iter()
                .zip(&mac)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same || issued > now_ms.saturating_add(60_000) {
            NonceCheck::Forged
        } else if now_ms.saturating_sub(issued) > self.lifetime_ms {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh
        }
    }

    /// Records nonce count `count` for `nonce` at `now_ms`; false when it
    /// is not above the last one seen (a replay). Nonces past their
    /// lifetime count as unseen, and are swept out at most once a minute
    /// (not on every REGISTER).
    pub fn first_use(&self, nonce: &str, count: u32, now_ms: u64) -> bool {
        let Ok(mut guard) = self.counts.lock() else {
            return false;
        };
        let (counts, swept_ms) = &mut *guard;
        let lifetime = self.lifetime_ms;
        if now_ms.saturating_sub(*swept_ms) >= SWEEP_MS {
            counts.retain(|_, (seen_ms, _)| now_ms.saturating_sub(*seen_ms) <= lifetime);
            *swept_ms = now_ms;
        }
        match counts.get_mut(nonce) {
            Some((seen_ms, last)) if now_ms.saturating_sub(*seen_ms) <= lifetime => {
                if count <= *last {
                    return false;
                }
                *last = count;
                true
            }
            _ => {
                counts.insert(nonce.to_owned(), (now_ms, count));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;
