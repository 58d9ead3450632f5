//! `[stripe]`: the Stripe account money moves through (none: ledger-only
//! mode), its webhook secret, and the least charge it takes per currency
//! when it settles in another.

use std::time::Duration;

use crate::schema::{check_secret, duration_in, secret};
use crate::secret::{Environment, Secret};
use crate::tree::TableReader;

/// `[stripe]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeConfig {
    /// `stripe.secret_key`: when unset, ledger-only mode.
    pub secret_key: Option<Secret>,
    /// `stripe.webhook_secret`: verifies webhook signatures.
    pub webhook_secret: Option<Secret>,
    /// `stripe.api_base`: Stripe's API, or a compatible fake in tests.
    pub api_base: String,
    /// `stripe.request_timeout`: how long one attempt of a Stripe request
    /// may take before it is retried (same idempotency key).
    pub request_timeout: Duration,
    /// `stripe.settlement_currency`: the currency the Stripe account
    /// settles in, when it charges in others (`jpy`, `usd`, `eur`, `gbp`).
    pub settlement_currency: Option<String>,
    /// `stripe.minimum_charge`: per currency charged in, the least amount
    /// (minor units) Stripe takes from this account, e.g. `{ jpy = 80 }`
    /// for an account settling in dollars.
    pub minimum_charge: Vec<(String, i64)>,
}

/// The currencies a booking may be priced in (billing's `Currency`).
pub const CURRENCIES: [&str; 4] = ["jpy", "usd", "eur", "gbp"];

/// Whether and how money is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeMode {
    /// No Stripe key: calls are rated and recorded, nothing is charged.
    LedgerOnly,
    /// A test-mode key (`sk_test_`/`rk_test_`).
    Test,
    /// A live key.
    Live,
}

impl StripeMode {
    /// The name shown in logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            StripeMode::LedgerOnly => "ledger-only",
            StripeMode::Test => "test",
            StripeMode::Live => "live",
        }
    }
}

impl StripeConfig {
    /// Ledger-only, test or live, from the key.
    pub fn mode(&self) -> StripeMode {
        match &self.secret_key {
            None => StripeMode::LedgerOnly,
            Some(key) if key.expose().contains("_test_") => StripeMode::Test,
            Some(_) => StripeMode::Live,
        }
    }
}

pub(crate) const STRIPE_KEYS: [&str; 6] = [
    "secret_key",
    "webhook_secret",
    "api_base",
    "request_timeout",
    "settlement_currency",
    "minimum_charge",
];

pub(crate) fn read_stripe(
    mut t: TableReader,
    env: &dyn Environment,
    defaults: StripeConfig,
) -> StripeConfig {
    let secret_key = secret(&mut t, "secret_key", env);
    check_secret(&t, "secret_key", &secret_key, |key| {
        if key.starts_with("sk_") || key.starts_with("rk_") {
            Ok(())
        } else {
            Err("is not a Stripe secret or restricted key (sk_... or rk_...)".to_owned())
        }
    });
    let webhook_secret = secret(&mut t, "webhook_secret", env);
    check_secret(&t, "webhook_secret", &webhook_secret, |key| {
        if key.starts_with("whsec_") {
            Ok(())
        } else {
            Err("is not a webhook signing secret (whsec_...)".to_owned())
        }
    });
    let api_base = t
        .get_with("api_base", |node| match node {
            crate::tree::Node::Str(s)
                if (s.starts_with("https://") || s.starts_with("http://"))
                    && s.len() > "https://".len()
                    && !s.contains(char::is_whitespace) =>
            {
                Ok(s.trim_end_matches('/').to_owned())
            }
            _ => Err("expected an http(s) URL such as \"https://api.stripe.com\"".to_owned()),
        })
        .unwrap_or(defaults.api_base);
    let request_timeout = duration_in(
        &mut t,
        "request_timeout",
        Duration::from_millis(100),
        Duration::from_secs(60),
    )
    .unwrap_or(defaults.request_timeout);
    let currency = |node: &crate::tree::Node| match node {
        crate::tree::Node::Str(s) if CURRENCIES.contains(&s.as_str()) => Ok(s.clone()),
        _ => Err(format!("expected one of {}", CURRENCIES.join(", "))),
    };
    let settlement_currency = t.get_with("settlement_currency", currency);
    let minimum_charge = t
        .get_with("minimum_charge", |node| {
            let crate::tree::Node::Table(entries) = node else {
                return Err(
                    "expected a table of currency = minor units, such as { jpy = 80 }".to_owned(),
                );
            };
            entries
                .iter()
                .map(|(code, item)| {
                    if !CURRENCIES.contains(&code.as_str()) {
                        return Err(format!(
                            "{code:?} is not a currency (one of {})",
                            CURRENCIES.join(", ")
                        ));
                    }
                    match item.get_ref() {
                        crate::tree::Node::Int(minor) if (1..=99_999_999).contains(minor) => {
                            Ok((code.clone(), *minor))
                        }
                        _ => Err(format!("{code}: expected minor units from 1 to 99999999")),
                    }
                })
                .collect()
        })
        .unwrap_or(defaults.minimum_charge);
    t.finish(&STRIPE_KEYS);
    StripeConfig {
        secret_key,
        webhook_secret,
        api_base,
        request_timeout,
        settlement_currency,
        minimum_charge,
    }
}
