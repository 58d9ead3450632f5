//! The daemon's side of the SIP edge: the edge's settings from the config.

use std::num::NonZeroU32;

use tollbridge_config::{Config, Transport as ConfigTransport, UnknownSource};
use tollbridge_sip::acl::Acl;
use tollbridge_sip::edge::{EdgeConfig, Listener, Transport};
use tollbridge_sip::gate::{GateRules, UnknownSourcePolicy};
use tollbridge_sip::wire::Limits;

/// Open SIP TCP connections allowed per source address. A trunk reuses a
/// few connections for all its calls; this only stops one peer from
/// holding sockets without bound.
const TCP_CONNECTIONS_PER_SOURCE: usize = 64;

/// The edge's settings from `[sip]` and `[[trunk]]`.
pub fn edge_config(config: &Config) -> EdgeConfig {
    EdgeConfig {
        listen: config
            .sip
            .listen
            .iter()
            .map(|listener| Listener {
                transport: match listener.transport {
                    ConfigTransport::Udp => Transport::Udp,
                    ConfigTransport::Tcp => Transport::Tcp,
                },
                addr: listener.addr,
            })
            .collect(),
        public_host: config
            .sip
            .public_address
            .as_ref()
            .map(|public| (public.host.clone(), public.port)),
        rules: gate_rules(config),
        invites_per_second: NonZeroU32::new(config.sip.invites_per_second)
            .unwrap_or(NonZeroU32::MIN),
        tcp_connections_per_source: TCP_CONNECTIONS_PER_SOURCE,
        user_agent: config.sip.user_agent.clone(),
        registrar: config.registrar.enabled(),
    }
}

/// The gate's rules: one ACL entry per trunk, in file order.
pub fn gate_rules(config: &Config) -> GateRules {
    GateRules {
        acl: Acl::new(
            config
                .trunks
                .iter()
                .map(|trunk| (trunk.name.clone(), trunk.allowed_sources()))
                .collect(),
        ),
        unknown_source: match config.sip.unknown_source {
            UnknownSource::Drop => UnknownSourcePolicy::Drop,
            UnknownSource::Reject => UnknownSourcePolicy::Reject,
        },
        limits: Limits::default(),
        registrar: config.registrar.allow.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_allows_loopback_on_both_transports() {
        let config = Config::defaults(&std::collections::HashMap::new());
        let edge = edge_config(&config);
        assert_eq!(edge.listen.len(), 2);
        assert_eq!(
            edge.rules
                .acl
                .trunk_for("127.0.0.1".parse().unwrap())
                .map(|t| &**t),
            Some("loopback")
        );
        assert_eq!(
            edge.rules
                .acl
                .trunk_for("54.172.60.1".parse().unwrap())
                .map(|t| &**t),
            None
        );
        assert_eq!(edge.rules.unknown_source, UnknownSourcePolicy::Drop);
        assert_eq!(edge.invites_per_second.get(), 30);
    }
}
