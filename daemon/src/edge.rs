//! The daemon's side of the SIP edge: the edge's settings from the config,
//! and its TLS (our certificate for `tls:` listeners, whom we trust when we
//! dial TLS).

use std::num::NonZeroU32;
use std::sync::Arc;

use tollbridge_config::{Config, Transport as ConfigTransport, UnknownSource};
use tollbridge_sip::acl::Acl;
use tollbridge_sip::edge::{EdgeConfig, Listener, Transport};
use tollbridge_sip::gate::{GateRules, UnknownSourcePolicy};
use tollbridge_sip::wire::Limits;

/// Open SIP TCP connections allowed per source address. A trunk reuses a
/// few connections for all its calls; this only stops one peer from
/// holding sockets without bound.
const TCP_CONNECTIONS_PER_SOURCE: usize = 64;

/// The edge's TLS, read from `[sip.tls]`.
#[derive(Clone)]
pub struct SipTls {
    /// What `tls:` listeners serve, when there is one; re-read on reload.
    pub certificates: Option<Arc<crate::tls::Certificates>>,
    /// The listeners' rustls configuration over `certificates`.
    server: Option<Arc<rustls::ServerConfig>>,
    /// Outbound TLS: the roots of `sip.tls.ca` or the system's.
    pub client: Arc<rustls::ClientConfig>,
}

impl SipTls {
    /// Reads `[sip.tls]`'s files: the certificate only when a `tls:`
    /// listener needs it (or it is configured anyway, so a mistake shows).
    pub fn open(config: &Config) -> Result<SipTls, crate::tls::TlsError> {
        let certificates = config
            .sip
            .tls
            .files
            .as_ref()
            .map(|files| crate::tls::Certificates::open("sip.tls", files))
            .transpose()?;
        let unusable = |e: rustls::Error| crate::tls::TlsError::File {
            table: "sip.tls",
            key: "certificate",
            path: String::new(),
            reason: e.to_string(),
        };
        let server = certificates
            .as_ref()
            .map(|certificates| crate::tls::server_config(certificates.clone(), &[]))
            .transpose()
            .map_err(unusable)?;
        Ok(SipTls {
            certificates,
            server,
            client: tls_client(config)?,
        })
    }
}

/// Whom outbound TLS trusts: the roots in `sip.tls.ca`, or the system's.
/// Read at start and again on reload.
pub fn tls_client(config: &Config) -> Result<Arc<rustls::ClientConfig>, crate::tls::TlsError> {
    let roots = crate::tls::client_roots(config.sip.tls.ca.as_deref())?;
    let client = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| crate::tls::TlsError::File {
            table: "sip.tls",
            key: "ca",
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(client))
}

/// The edge's settings from `[sip]` and `[[trunk]]`, with its TLS.
pub fn edge_config(config: &Config, tls: &SipTls) -> EdgeConfig {
    EdgeConfig {
        listen: config
            .sip
            .listen
            .iter()
            .map(|listener| Listener {
                transport: match listener.transport {
                    ConfigTransport::Udp => Transport::Udp,
                    ConfigTransport::Tcp => Transport::Tcp,
                    ConfigTransport::Tls => Transport::Tls,
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
        tls_server: tls.server.clone(),
        tls_client: tls.client.clone(),
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
        let tls = SipTls::open(&config).unwrap();
        let edge = edge_config(&config, &tls);
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
