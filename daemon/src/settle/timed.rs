//! A [`Gateway`] that times every request into the
//! `tollbridge_stripe_request_seconds` histograms.

use std::time::Instant;

use tollbridge_billing::stripe::{
    Gateway, GatewayError, GatewayFuture, HoldRequest, Intent, RefundRequest, Refunded,
    ReleaseReason,
};

use crate::metrics::StripeLatency;

/// Times the requests of the gateway it wraps.
pub struct TimedGateway<G> {
    inner: G,
    latency: StripeLatency,
}

impl<G> TimedGateway<G> {
    /// Wraps `inner`, recording into `latency`.
    pub fn new(inner: G, latency: StripeLatency) -> Self {
        TimedGateway { inner, latency }
    }
}

fn outcome<T>(result: &Result<T, GatewayError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(GatewayError::Declined { .. }) => "declined",
        Err(GatewayError::Refused { .. }) => "refused",
        Err(GatewayError::Unknown(_)) => "unknown",
    }
}

impl<G: Gateway> TimedGateway<G> {
    fn timed<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        request: GatewayFuture<'a, T>,
    ) -> GatewayFuture<'a, T> {
        Box::pin(async move {
            let started = Instant::now();
            let result = request.await;
            let labels = vec![
                ("operation", operation.to_owned()),
                ("outcome", outcome(&result).to_owned()),
            ];
            self.latency
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

impl<G: Gateway> Gateway for TimedGateway<G> {
    fn hold(&self, hold: HoldRequest) -> GatewayFuture<'_, Intent> {
        self.timed("hold", self.inner.hold(hold))
    }

    fn capture(&self, intent: String, amount: i64, key: String) -> GatewayFuture<'_, Intent> {
        self.timed("capture", self.inner.capture(intent, amount, key))
    }

    fn cancel(
        &self,
        intent: String,
        key: String,
        reason: ReleaseReason,
    ) -> GatewayFuture<'_, Intent> {
        self.timed("cancel", self.inner.cancel(intent, key, reason))
    }

    fn increment(&self, intent: String, amount: i64, key: String) -> GatewayFuture<'_, Intent> {
        self.timed("increment", self.inner.increment(intent, amount, key))
    }

    fn retrieve(&self, intent: String) -> GatewayFuture<'_, Intent> {
        self.timed("retrieve", self.inner.retrieve(intent))
    }

    fn find(
        &self,
        customer: String,
        key: String,
        value: String,
    ) -> GatewayFuture<'_, Option<Intent>> {
        self.timed("find", self.inner.find(customer, key, value))
    }

    fn refund(&self, refund: RefundRequest) -> GatewayFuture<'_, Refunded> {
        self.timed("refund", self.inner.refund(refund))
    }

    fn find_refund(
        &self,
        payment_intent: String,
        key: String,
        value: String,
    ) -> GatewayFuture<'_, Option<Refunded>> {
        self.timed(
            "find_refund",
            self.inner.find_refund(payment_intent, key, value),
        )
    }
}
