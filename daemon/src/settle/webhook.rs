//! Stripe's webhook signatures. Deliveries come in at `http::stripe`, are
//! verified here, and are recorded and applied by the ledger. Webhooks
//! only speed things up: the worker's read-back remains the truth, so an
//! event lost, late or out of order changes nothing that matters.
//!
//! Verification is by hand (HMAC-SHA256 over `"{t}.{body}"` with the
//! endpoint secret, `hmac` + `sha2`, compared in constant time, 300 s
//! tolerance): `async-stripe-webhook` would also parse the whole typed
//! event, and we need only its id, type and object ids.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from now.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Stripe-Signature` header, or one we cannot read.
    Malformed,
    /// The timestamp is more than the tolerance away from now.
    Stale,
    /// No `v1` signature matches.
    Mismatch,
}

/// Verifies `Stripe-Signature` (`t=<unix>,v1=<hex>[,v1=...]`) for `body`
/// with the endpoint `secret` at `now` (unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => {
                signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    let matches = signatures.iter().any(|signature| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // verify_slice compares in constant time.
        mac.verify_slice(signature).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signature_table() {
        let secret = "whsec_test";
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        let now = 1_800_000_000;
        let good = sign(secret, now, body);
        type Case<'a> = (Option<String>, &'a [u8], i64, Result<(), SignatureError>);
        let cases: Vec<Case> = vec![
            (Some(format!("t={now},v1={good}")), body, now, Ok(())),
            (
                Some(format!("t={now},v1={},v1={good}", "00".repeat(32))),
                body,
                now,
                Ok(()),
            ),
            (Some(format!("t={now},v1={good}")), body, now + 300, Ok(())),
            (
                Some(format!("t={now},v1={good}")),
                body,
                now + 301,
                Err(SignatureError::Stale),
            ),
            (
                Some(format!("t={now},v1={good}")),
                body,
                now - 301,
                Err(SignatureError::Stale),
            ),
            (
                Some(format!("t={now},v1={good}")),
                b"{\"id\":\"evt_2\"}",
                now,
                Err(SignatureError::Mismatch),
            ),
            (
                Some(format!("t={now},v1={}", sign("whsec_other", now, body))),
                body,
                now,
                Err(SignatureError::Mismatch),
            ),
            (
                Some(format!("t={},v1={good}", now + 1)),
                body,
                now,
                Err(SignatureError::Mismatch),
            ),
            (
                Some(format!("v1={good}")),
                body,
                now,
                Err(SignatureError::Malformed),
            ),
            (
                Some(format!("t={now}")),
                body,
                now,
                Err(SignatureError::Malformed),
            ),
            (
                Some(format!("t={now},v1=zz")),
                body,
                now,
                Err(SignatureError::Malformed),
            ),
            (
                Some("garbage".into()),
                body,
                now,
                Err(SignatureError::Malformed),
            ),
            (None, body, now, Err(SignatureError::Malformed)),
        ];
        for (header, body, at, expected) in cases {
            assert_eq!(
                verify(header.as_deref(), body, secret, at),
                expected,
                "{header:?} at {at}"
            );
        }
    }
}
