//! `[registrar]`: experts' softphones registering with us (RFC 3261 §10):
//! from where, for how long, and how hard a wrong password is punished.

use std::time::Duration;

use ipnet::IpNet;

use crate::schema::duration_in;
use crate::tree::{Node, TableReader};

/// `[registrar]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrarConfig {
    /// `registrar.allow`: the source ranges REGISTER is taken from
    /// (`["any"]` for every address); empty (the default) turns the
    /// registrar off and REGISTER gets 405.
    pub allow: Vec<IpNet>,
    /// `registrar.realm`: the digest realm experts' passwords are hashed
    /// with; `sip.public_address`'s host when unset.
    pub realm: Option<String>,
    /// `registrar.min_expires`: a shorter registration gets 423 with this.
    pub min_expires: Duration,
    /// `registrar.max_expires`: a longer registration is cut to this.
    pub max_expires: Duration,
    /// `registrar.nonce_lifetime`: how long a challenge's nonce is good
    /// for; an older one gets a new challenge with `stale=true`.
    pub nonce_lifetime: Duration,
    /// `registrar.max_failures`: failed attempts from one address before
    /// it is locked out.
    pub max_failures: u32,
    /// `registrar.lockout`: how long a locked-out address is refused.
    pub lockout: Duration,
    /// `registrar.registers_per_minute`: REGISTERs one address may send a
    /// minute; more are answered 503 with `Retry-After`.
    pub registers_per_minute: u32,
    /// `registrar.max_devices`: registered devices per expert.
    pub max_devices: u32,
    /// `registrar.keepalive`: how often each device registered through
    /// this node is sent an OPTIONS, so its NAT mapping (or TCP
    /// connection) stays open.
    pub keepalive: Duration,
}

impl RegistrarConfig {
    /// The registrar's defaults: off (no address allowed).
    pub fn defaults() -> RegistrarConfig {
        RegistrarConfig {
            allow: Vec::new(),
            realm: None,
            min_expires: Duration::from_secs(60),
            max_expires: Duration::from_secs(3_600),
            nonce_lifetime: Duration::from_secs(300),
            max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            registers_per_minute: 60,
            max_devices: 10,
            keepalive: Duration::from_secs(25),
        }
    }

    /// Whether REGISTER is taken at all.
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty()
    }
}

pub(crate) const REGISTRAR_KEYS: [&str; 10] = [
    "allow",
    "realm",
    "min_expires",
    "max_expires",
    "nonce_lifetime",
    "max_failures",
    "lockout",
    "registers_per_minute",
    "max_devices",
    "keepalive",
];

/// `"any"`, an address, or a CIDR range.
fn ranges(node: &Node) -> Result<Vec<IpNet>, String> {
    let usage = "expected a list of addresses or CIDR ranges, or [\"any\"]";
    let Node::Array(items) = node else {
        return Err(usage.to_owned());
    };
    let mut nets = Vec::new();
    for item in items {
        let Node::Str(text) = item.get_ref() else {
            return Err(usage.to_owned());
        };
        if text == "any" {
            nets.push("0.0.0.0/0".parse().map_err(|_| usage.to_owned())?);
            nets.push("::/0".parse().map_err(|_| usage.to_owned())?);
            continue;
        }
        let net = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(|net| net.trunc())
            .map_err(|_| format!("{text:?} is not an address or CIDR range; {usage}"))?;
        nets.push(net);
    }
    Ok(nets)
}

fn whole(t: &mut TableReader, key: &str, range: std::ops::RangeInclusive<i64>) -> Option<u32> {
    let (low, high) = (*range.start(), *range.end());
    t.get_with(key, |node| match node {
        Node::Int(n) if range.contains(n) => Ok(*n as u32),
        _ => Err(format!("expected a whole number from {low} to {high}")),
    })
}

pub(crate) fn read_registrar(mut t: TableReader, defaults: RegistrarConfig) -> RegistrarConfig {
    let allow = t.get_with("allow", ranges);
    let realm = t.get_with("realm", |node| match node {
        Node::Str(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '"') => {
            Ok(s.clone())
        }
        _ => Err("expected a realm: printable characters, no spaces or quotes".to_owned()),
    });
    let secs = Duration::from_secs;
    let min_expires = duration_in(&mut t, "min_expires", secs(10), secs(3_600));
    let max_expires = duration_in(&mut t, "max_expires", secs(60), secs(86_400));
    let nonce_lifetime = duration_in(&mut t, "nonce_lifetime", secs(30), secs(3_600));
    let max_failures = whole(&mut t, "max_failures", 1..=1_000);
    let lockout = duration_in(&mut t, "lockout", secs(1), secs(86_400));
    let registers_per_minute = whole(&mut t, "registers_per_minute", 1..=100_000);
    let max_devices = whole(&mut t, "max_devices", 1..=100);
    let keepalive = duration_in(&mut t, "keepalive", secs(5), secs(300));
    let config = RegistrarConfig {
        allow: allow.unwrap_or(defaults.allow),
        realm: realm.or(defaults.realm),
        min_expires: min_expires.unwrap_or(defaults.min_expires),
        max_expires: max_expires.unwrap_or(defaults.max_expires),
        nonce_lifetime: nonce_lifetime.unwrap_or(defaults.nonce_lifetime),
        max_failures: max_failures.unwrap_or(defaults.max_failures),
        lockout: lockout.unwrap_or(defaults.lockout),
        registers_per_minute: registers_per_minute.unwrap_or(defaults.registers_per_minute),
        max_devices: max_devices.unwrap_or(defaults.max_devices),
        keepalive: keepalive.unwrap_or(defaults.keepalive),
    };
    if config.min_expires > config.max_expires {
        t.diagnostics().report(
            &t.key("min_expires"),
            None,
            None,
            "registrar.min_expires is above registrar.max_expires",
        );
    }
    t.finish(&REGISTRAR_KEYS);
    config
}
