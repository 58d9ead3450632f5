//! Delivering the ledger's events to the booking platform's endpoints
//! (`[[webhook]]`).
//!
//! Every node runs this loop: it claims the deliveries that are due (the
//! ledger leases each to one node), POSTs each event's body signed as
//! Stripe signs its own (`Tollbridge-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "t.body" with the endpoint's secret>`) and records the
//! outcome: a 2xx answer delivers it; anything else is tried again after
//! `first_retry`, doubling up to an hour, until 3 days after the event,
//! when the delivery is given up (and stays listed, for a redelivery by
//! hand). A receiver that is slow or dead holds only its own deliveries:
//! attempts run in tasks of their own with a 10 s limit, and call control
//! never waits on any of it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::Mac;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tollbridge_config::WebhookConfig;

use crate::clock::now_ms;
use crate::ledger::{DeliveryOutcome, DueDelivery, WebhookEndpoint};
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// How often the loop looks for due deliveries.
const POLL: Duration = Duration::from_millis(250);
/// The longest one attempt may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);
/// Attempts in flight at once, over all endpoints.
const IN_FLIGHT: usize = 16;
/// The longest wait between two attempts.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);
/// How long a delivery is tried before it is given up.
const GIVE_UP_AFTER_MS: i64 = 3 * 24 * 3600 * 1000;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The `[[webhook]]` endpoints as the ledger keeps them.
pub fn endpoints(webhooks: &[WebhookConfig]) -> Vec<WebhookEndpoint> {
    webhooks
        .iter()
        .map(|w| WebhookEndpoint {
            name: w.name.clone(),
            url: w.url.clone(),
            types: w.events.clone(),
        })
        .collect()
}

/// The `Tollbridge-Signature` header of `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this cannot happen.
        return format!("t={t}");
    };
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before attempt `attempts + 1`: `first` doubled per attempt
/// made, at most an hour.
pub fn backoff(first: Duration, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    first
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(LONGEST_WAIT)
}

/// What to record after an attempt answered `status` (or failed with
/// `error`), made `now_ms`, of an event made `created_ms`.
pub fn outcome(
    status: Option<u16>,
    error: Option<String>,
    attempts_before: i64,
    first_retry: Duration,
    created_ms: i64,
    now_ms: i64,
) -> DeliveryOutcome {
    if let Some(status) = status
        && (200..300).contains(&status)
    {
        return DeliveryOutcome::Delivered { status };
    }
    let error = error.unwrap_or_else(|| match status {
        Some(status) => format!("the receiver answered {status}"),
        None => "no answer".to_owned(),
    });
    let wait = backoff(first_retry, attempts_before);
    let next = now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    if next > created_ms.saturating_add(GIVE_UP_AFTER_MS) {
        DeliveryOutcome::GaveUp { status, error }
    } else {
        DeliveryOutcome::Retry {
            status,
            error,
            next_attempt_ms: next,
        }
    }
}

/// Delivers due events until `shutdown`.
pub async fn deliver_loop(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: HttpsClient = Client::builder(TokioExecutor::new()).build(connector);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let config = shared.config.load_full();
        if config.webhooks.is_empty() || !shared.ledger_up() {
            continue;
        }
        let free = i64::try_from(slots.available_permits()).unwrap_or(0);
        if free == 0 {
            continue;
        }
        let due = match shared.ledger.claim_due_deliveries(now_ms(), free).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot claim due deliveries");
                continue;
            }
        };
        for delivery in due {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let endpoint = config
                .webhooks
                .iter()
                .find(|w| w.name == delivery.endpoint)
                .cloned();
            let (shared, client) = (shared.clone(), client.clone());
            tokio::spawn(async move {
                let _slot = slot;
                attempt(&shared, &client, delivery, endpoint).await;
            });
        }
    }
}

/// One attempt of `delivery` to `endpoint` (this node's config of it).
async fn attempt(
    shared: &Shared,
    client: &HttpsClient,
    delivery: DueDelivery,
    endpoint: Option<WebhookConfig>,
) {
    let Some(endpoint) = endpoint else {
        // Another node registered it; this one has no secret for it.
        let outcome = DeliveryOutcome::Retry {
            status: None,
            error: format!(
                "node {} has no [[webhook]] named {:?}: keep the nodes' lists alike",
                shared.ledger.node(),
                delivery.endpoint
            ),
            next_attempt_ms: now_ms() + 60_000,
        };
        record(shared, &delivery, outcome).await;
        return;
    };
    let t = now_ms() / 1000;
    let signature = signature(endpoint.secret.expose(), t, &delivery.body);
    let request = hyper::Request::post(&delivery.url)
        .header("content-type", "application/json")
        .header("user-agent", "Tollbridge-Webhooks")
        .header("tollbridge-event-id", &delivery.event_id)
        .header("tollbridge-signature", signature)
        .body(Full::new(Bytes::from(delivery.body.clone())));
    let (status, error) = match request {
        Err(e) => (None, Some(format!("cannot build the request: {e}"))),
        Ok(request) => match tokio::time::timeout(ATTEMPT_LIMIT, client.request(request)).await {
            Err(_) => (None, Some("no answer within 10 s".to_owned())),
            Ok(Err(e)) => (None, Some(format!("cannot reach {}: {e}", endpoint.url))),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                // Read (and drop) the body so the connection can be reused.
                let _ = tokio::time::timeout(ATTEMPT_LIMIT, response.into_body().collect()).await;
                (Some(status), None)
            }
        },
    };
    let outcome = outcome(
        status,
        error,
        delivery.attempts,
        endpoint.first_retry,
        delivery.created_ms,
        now_ms(),
    );
    let word = match &outcome {
        DeliveryOutcome::Delivered { .. } => "delivered",
        DeliveryOutcome::Retry { .. } => "retry",
        DeliveryOutcome::GaveUp { .. } => "failed",
    };
    shared.metrics.webhook_attempted(&delivery.endpoint, word);
    match &outcome {
        DeliveryOutcome::Delivered { .. } => {}
        DeliveryOutcome::Retry { error, .. } => {
            tracing::info!(event = %delivery.event_id, endpoint = %delivery.endpoint, %error, "webhook delivery failed; will retry");
        }
        DeliveryOutcome::GaveUp { error, .. } => {
            tracing::warn!(event = %delivery.event_id, endpoint = %delivery.endpoint, %error, "webhook delivery given up after 3 days");
        }
    }
    record(shared, &delivery, outcome).await;
}

async fn record(shared: &Shared, delivery: &DueDelivery, outcome: DeliveryOutcome) {
    if let Err(e) = shared
        .ledger
        .delivery_attempted(delivery.id.clone(), outcome, now_ms())
        .await
    {
        // The claim lapses and the delivery is attempted again: at least once.
        tracing::warn!(error = %e, delivery = %delivery.id, "cannot record a webhook attempt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // Checked with: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec_0123456789abcdef'
        assert_eq!(
            signature("whsec_0123456789abcdef", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=9f5e37cdc7ea587c7c02062d93283cad000d66a831b2a1676418696db47ed6c2"
        );
    }

    #[test]
    fn waits_double_from_the_first_up_to_an_hour() {
        let first = Duration::from_secs(10);
        for (attempts, wait) in [
            (0, 10),
            (1, 20),
            (2, 40),
            (5, 320),
            (9, 3600),
            (60, 3600),
            (-3, 10),
        ] {
            assert_eq!(
                backoff(first, attempts),
                Duration::from_secs(wait),
                "{attempts}"
            );
        }
    }

    #[test]
    fn outcomes_table() {
        let first = Duration::from_secs(10);
        let created = 1_000_000;
        assert_eq!(
            outcome(Some(204), None, 3, first, created, created + 5),
            DeliveryOutcome::Delivered { status: 204 }
        );
        assert_eq!(
            outcome(Some(500), None, 0, first, created, created + 5),
            DeliveryOutcome::Retry {
                status: Some(500),
                error: "the receiver answered 500".to_owned(),
                next_attempt_ms: created + 5 + 10_000,
            }
        );
        assert_eq!(
            outcome(None, Some("refused".into()), 2, first, created, created),
            DeliveryOutcome::Retry {
                status: None,
                error: "refused".to_owned(),
                next_attempt_ms: created + 40_000,
            }
        );
        // A redirect is not a delivery.
        assert!(matches!(
            outcome(Some(301), None, 0, first, created, created),
            DeliveryOutcome::Retry { .. }
        ));
        // The next wait would pass 3 days: given up.
        let late = created + GIVE_UP_AFTER_MS - 1000;
        assert_eq!(
            outcome(Some(503), None, 30, first, created, late),
            DeliveryOutcome::GaveUp {
                status: Some(503),
                error: "the receiver answered 503".to_owned(),
            }
        );
    }
}
