//! SIGHUP: read the config again and apply what can change while running.
//!
//! An invalid file is logged with every error and changes nothing. Keys
//! that need sockets or files reopened (listeners, our public SIP address,
//! the INVITE rate, media ports, database, node name and cluster timing,
//! log format, Stripe keys) keep
//! their running values, with a warning; everything else (API token,
//! trunks and their ACLs, `sip.unknown_source`, timers, `prompts.warning_before`, log level)
//! applies to requests and calls that start after the reload.

use std::sync::Arc;

use tollbridge_config::Config;
use tracing::{error, info, warn};

use crate::logging::LogHandle;
use crate::run::ConfigSource;
use crate::state::Shared;

/// Reloads the config from `source` into `shared`.
pub async fn reload(shared: &Arc<Shared>, source: &ConfigSource, log: &LogHandle) {
    let loaded = match source {
        ConfigSource::Defaults => Ok(Config::defaults(&tollbridge_config::ProcessEnvironment)),
        ConfigSource::File(path) => {
            let path = path.clone();
            match tokio::task::spawn_blocking(move || Config::load(&path)).await {
                Ok(result) => result,
                Err(e) => {
                    error!(error = %e, "config reload task failed; keeping the running config");
                    return;
                }
            }
        }
    };
    let new = match loaded {
        Ok(new) => new,
        Err(e) => {
            for line in e.errors() {
                error!(error = %line, "config reload rejected");
            }
            error!("config reload failed; keeping the running config");
            return;
        }
    };
    let running = shared.config.load_full();
    let applied = keep_restart_only_keys(&running, new);
    if let (Some(certificates), Some(tls)) = (shared.https.get(), &applied.http.tls) {
        let tls = tls.clone();
        let certificates = certificates.clone();
        match tokio::task::spawn_blocking(move || certificates.reload(&tls)).await {
            Ok(Ok(())) => info!("https certificate re-read"),
            Ok(Err(e)) => {
                error!(error = %e, "https certificate not reloaded; serving the running one")
            }
            Err(e) => error!(error = %e, "https certificate reload task failed"),
        }
    }
    if let (Some(certificates), Some(files)) =
        (shared.sip_certificates.get(), &applied.sip.tls.files)
    {
        let files = files.clone();
        let certificates = certificates.clone();
        match tokio::task::spawn_blocking(move || certificates.reload(&files)).await {
            Ok(Ok(())) => info!("sip tls certificate re-read"),
            Ok(Err(e)) => {
                error!(error = %e, "sip tls certificate not reloaded; serving the running one")
            }
            Err(e) => error!(error = %e, "sip tls certificate reload task failed"),
        }
    }
    if let Some(sip) = &shared.sip {
        let config = applied.clone();
        match tokio::task::spawn_blocking(move || crate::edge::tls_client(&config)).await {
            Ok(Ok(client)) => {
                sip.set_tls_client(client);
                info!("sip tls ca re-read");
            }
            Ok(Err(e)) => {
                error!(error = %e, "sip tls ca not reloaded; trusting the running roots")
            }
            Err(e) => error!(error = %e, "sip tls ca reload task failed"),
        }
    }
    log.apply(&applied.log);
    if let Some(sip) = &shared.sip {
        sip.set_rules(crate::edge::gate_rules(&applied));
    }
    if applied.webhooks != running.webhooks
        && let Err(e) = shared
            .ledger
            .set_webhook_endpoints(
                crate::notify::endpoints(&applied.webhooks),
                crate::clock::now_ms(),
            )
            .await
    {
        error!(error = %e, "cannot record the new [[webhook]] endpoints in the ledger");
    }
    shared.config.store(Arc::new(applied));
    info!("config reloaded");
}

/// Returns `new` with the keys that need a restart put back to their running
/// values, warning about each one that changed.
fn keep_restart_only_keys(running: &Config, mut new: Config) -> Config {
    let mut restart_needed = Vec::new();
    if new.sip.listen != running.sip.listen {
        restart_needed.push("sip.listen");
        new.sip.listen = running.sip.listen.clone();
    }
    if new.sip.public_address != running.sip.public_address {
        restart_needed.push("sip.public_address");
        new.sip.public_address = running.sip.public_address.clone();
    }
    if new.sip.user_agent != running.sip.user_agent {
        restart_needed.push("sip.user_agent");
        new.sip.user_agent = running.sip.user_agent.clone();
    }
    if new.sip.invites_per_second != running.sip.invites_per_second {
        restart_needed.push("sip.invites_per_second");
        new.sip.invites_per_second = running.sip.invites_per_second;
    }
    if new.media != running.media {
        restart_needed.push("media");
        new.media = running.media.clone();
    }
    if new.http.listen != running.http.listen {
        restart_needed.push("http.listen");
        new.http.listen = running.http.listen;
    }
    if new.http.tls.is_some() != running.http.tls.is_some() {
        // Plain HTTP and HTTPS are different listeners.
        restart_needed.push("http.tls");
        new.http.tls = running.http.tls.clone();
    }
    if new.database != running.database {
        restart_needed.push("database");
        new.database = running.database.clone();
    }
    if new.node != running.node {
        // The ledger writes the name it was opened with on every row.
        restart_needed.push("node.name");
        new.node = running.node.clone();
    }
    if new.cluster != running.cluster {
        restart_needed.push("cluster");
        new.cluster = running.cluster.clone();
    }
    if new.prompts.dir != running.prompts.dir {
        // The WAVs are read and encoded once at start.
        restart_needed.push("prompts.dir");
        new.prompts.dir = running.prompts.dir.clone();
    }
    if new.stripe != running.stripe {
        restart_needed.push("stripe");
        new.stripe = running.stripe.clone();
    }
    for key in restart_needed {
        warn!(
            key,
            "changed in the config file; takes effect after a restart"
        );
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn restart_only_keys_keep_their_running_values() {
        let running = Config::defaults(&HashMap::new());
        let mut new = running.clone();
        new.http.listen = "127.0.0.1:9999".parse().unwrap();
        new.database.path = "/elsewhere.db".into();
        new.node.name = "another-name".into();
        new.cluster.node_timeout = std::time::Duration::from_secs(30);
        new.calls.ring_timeout = std::time::Duration::from_secs(5);
        new.http.api_token = Some(tollbridge_config::Secret::inline("a-new-token-0123456789"));
        let applied = keep_restart_only_keys(&running, new);
        assert_eq!(applied.http.listen, running.http.listen);
        assert_eq!(applied.database, running.database);
        assert_eq!(applied.node, running.node);
        assert_eq!(applied.cluster, running.cluster);
        assert_eq!(
            applied.calls.ring_timeout,
            std::time::Duration::from_secs(5)
        );
        assert!(applied.http.api_token.is_some());
    }
}
