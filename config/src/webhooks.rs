//! `[[webhook]]`: the booking platform's endpoints that events are POSTed
//! to (the daemon's `notify` delivers them), as the config names them.

use std::time::Duration;

use crate::schema::{check_secret, duration_in, secret};
use crate::secret::{Environment, Secret};
use crate::tree::{Diagnostics, Item, TableReader};
use crate::trunks::is_trunk_name;

/// The event types a `[[webhook]]` can name in `events`.
pub const WEBHOOK_EVENT_TYPES: [&str; 15] = [
    "call.ringing",
    "call.answered",
    "call.warning",
    "call.extended",
    "call.extension_failed",
    "call.ended",
    "settlement.succeeded",
    "settlement.failed",
    "settlement.unknown",
    "booking.completed",
    "booking.no_show",
    "refund.succeeded",
    "refund.failed",
    "dispute.created",
    "dispute.closed",
];

/// One `[[webhook]]`: an endpoint of the booking platform that events are
/// POSTed to, signed with its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// `webhook.name`: unique; deliveries are kept under it.
    pub name: String,
    /// `webhook.url`: `https://...` (or `http://` for a receiver on a
    /// private network).
    pub url: String,
    /// `webhook.secret`: signs each delivery (`Tollbridge-Signature`).
    pub secret: Secret,
    /// `webhook.events`: the types it takes; empty for all.
    pub events: Vec<String>,
    /// `webhook.first_retry`: the wait before the first retry; it doubles
    /// with each failed attempt up to an hour, for up to 3 days.
    pub first_retry: Duration,
}

pub(crate) const WEBHOOK_KEYS: [&str; 5] = ["name", "url", "secret", "events", "first_retry"];

pub(crate) fn read_webhooks(
    tables: Vec<(String, Item)>,
    env: &dyn Environment,
    diagnostics: &Diagnostics,
) -> Vec<WebhookConfig> {
    let mut webhooks: Vec<WebhookConfig> = Vec::new();
    for (path, item) in tables {
        let mut t = TableReader::new(&path, Some(item), diagnostics);
        let (has_name, has_url, has_secret) = (
            t.span("name").is_some(),
            t.span("url").is_some(),
            t.span("secret").is_some(),
        );
        let name = t.get_with("name", |node| match node {
            crate::tree::Node::Str(name) if is_trunk_name(name) => Ok(name.clone()),
            _ => Err("expected 1 to 32 of a-z, 0-9, - and _".to_owned()),
        });
        if !has_name {
            diagnostics.report(&t.key("name"), None, None, "every [[webhook]] needs a name");
        }
        if let Some(name) = &name
            && webhooks.iter().any(|other| &other.name == name)
        {
            diagnostics.report(
                &t.key("name"),
                None,
                None,
                format!("a second [[webhook]] named {name:?}"),
            );
        }
        let url = t.get_with("url", |node| match node {
            crate::tree::Node::Str(url)
                if (url.starts_with("https://") || url.starts_with("http://"))
                    && url.len() > "https://".len()
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Ok(url.clone())
            }
            _ => Err("expected an https:// (or http://) URL".to_owned()),
        });
        if !has_url {
            diagnostics.report(
                &t.key("url"),
                None,
                None,
                "required: where events are POSTed",
            );
        }
        let secret = secret(&mut t, "secret", env);
        if !has_secret {
            diagnostics.report(
                &t.key("secret"),
                None,
                None,
                "required: the secret deliveries are signed with",
            );
        }
        check_secret(&t, "secret", &secret, |value| {
            if value.len() < 16 {
                Err("must be at least 16 characters long".to_owned())
            } else {
                Ok(())
            }
        });
        let events = t.list::<String>("events").unwrap_or_default();
        for kind in &events {
            if !WEBHOOK_EVENT_TYPES.contains(&kind.as_str()) {
                diagnostics.report(
                    &t.key("events"),
                    None,
                    None,
                    format!(
                        "{kind:?} is not an event type (one of {})",
                        WEBHOOK_EVENT_TYPES.join(", ")
                    ),
                );
            }
        }
        let first_retry = duration_in(
            &mut t,
            "first_retry",
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )
        .unwrap_or(Duration::from_secs(10));
        t.finish(&WEBHOOK_KEYS);
        if let (Some(name), Some(url), Some(secret)) = (name, url, secret) {
            webhooks.push(WebhookConfig {
                name,
                url,
                secret,
                events,
                first_retry,
            });
        }
    }
    webhooks
}
