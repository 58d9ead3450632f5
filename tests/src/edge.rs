//! The SIP edge as the in-process edge tests start it: listeners on
//! 127.0.0.1 with ephemeral ports, one trunk ("lab") allowing 127.0.0.1.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use tollbridge_sip::acl::Acl;
use tollbridge_sip::edge::{EdgeConfig, Listener, SipEdge, Transport};
use tollbridge_sip::gate::{GateRules, UnknownSourcePolicy};
use tollbridge_sip::wire::Limits;

/// An edge listening on `transports` (127.0.0.1, ephemeral ports), the
/// "lab" trunk allowing 127.0.0.1, `policy` for other sources, 50 INVITEs
/// per second and 4 connections per source, no registrar, no TLS (give
/// `tls_server` and `tls_client` for a `tls:` listener).
pub fn lab_edge_config(transports: &[Transport], policy: UnknownSourcePolicy) -> EdgeConfig {
    EdgeConfig {
        listen: transports
            .iter()
            .map(|transport| Listener {
                transport: *transport,
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            })
            .collect(),
        public_host: None,
        rules: GateRules {
            acl: Acl::new(vec![(
                "lab".into(),
                vec![ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]))],
            )]),
            unknown_source: policy,
            limits: Limits::default(),
            registrar: Vec::new(),
        },
        invites_per_second: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
        tcp_connections_per_source: 4,
        user_agent: "tollbridge-test".into(),
        registrar: false,
        tls_server: None,
        tls_client: crate::tls::trusting_nothing(),
    }
}

/// Where `edge` listens on `transport`, as bound.
pub fn listener(edge: &SipEdge, transport: Transport) -> SocketAddr {
    edge.listeners()
        .iter()
        .find(|l| l.transport == transport)
        .map(|l| l.addr)
        .expect("the edge listens on the transport asked for")
}
