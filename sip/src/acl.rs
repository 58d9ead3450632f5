//! Who may send us SIP: source-address allow lists per trunk.
//!
//! Twilio authenticates origination by source IP only and never answers a
//! digest challenge, so this list is the only check on inbound calls.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// The allowed source ranges of every trunk.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    trunks: Vec<(Arc<str>, Vec<IpNet>)>,
}

impl Acl {
    /// An ACL from `(trunk name, allowed ranges)` pairs, in priority order.
    pub fn new(trunks: Vec<(String, Vec<IpNet>)>) -> Acl {
        Acl {
            trunks: trunks
                .into_iter()
                .map(|(name, ranges)| (Arc::from(name), ranges))
                .collect(),
        }
    }

    /// The first trunk whose ranges contain `source`, if any. IPv4-mapped
    /// IPv6 sources (`::ffff:a.b.c.d`, from dual-stack sockets) match the
    /// IPv4 ranges.
    pub fn trunk_for(&self, source: IpAddr) -> Option<&Arc<str>> {
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        self.trunks
            .iter()
            .find(|(_, ranges)| ranges.iter().any(|range| range.contains(&source)))
            .map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> Acl {
        let nets = |list: &[&str]| list.iter().map(|n| n.parse().unwrap()).collect();
        Acl::new(vec![
            (
                "twilio".into(),
                nets(&["54.172.60.0/30", "177.71.206.192/30"]),
            ),
            ("lab".into(), nets(&["127.0.0.1/32", "::1/128"])),
        ])
    }

    #[test]
    fn matches_by_range() {
        let acl = acl();
        let cases = [
            ("54.172.60.0", Some("twilio")),
            ("54.172.60.3", Some("twilio")),
            ("54.172.60.4", None),
            ("177.71.206.193", Some("twilio")),
            ("127.0.0.1", Some("lab")),
            ("127.0.0.2", None),
            ("::1", Some("lab")),
            ("::ffff:127.0.0.1", Some("lab")),
            ("::ffff:54.172.60.1", Some("twilio")),
            ("10.0.0.1", None),
            ("2001:db8::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(
                acl.trunk_for(ip.parse().unwrap()).map(|t| &**t),
                want,
                "{ip}"
            );
        }
    }

    #[test]
    fn an_empty_acl_allows_nobody() {
        assert_eq!(Acl::default().trunk_for("127.0.0.1".parse().unwrap()), None);
    }
}
