//! `[[callee]]`: what we need to reach SIP-URI callees (an expert's PBX
//! or SIP account), matched by the host of the booking's callee URI, as a
//! trunk's termination has its own: digest credentials for one that
//! challenges our INVITE with 401 or 407, and its SRTP policy.

use crate::schema::secret;
use crate::secret::{Environment, Secret};
use crate::tree::{Diagnostics, Item, TableReader};

/// One `[[callee]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CalleeConfig {
    /// `callee.host`: the host, or host and port, of the callee URIs these
    /// credentials are for (`pbx.example.com`, `192.0.2.10:5070`).
    pub host: String,
    /// `callee.username` and `callee.password`: digest credentials, when
    /// the callee challenges.
    pub credentials: Option<(String, Secret)>,
    /// `callee.srtp`: SRTP towards these callees; `None` follows
    /// `media.srtp`.
    pub srtp: Option<crate::values::Srtp>,
}

impl CalleeConfig {
    /// Whether these credentials are for `uri`: its host and port are
    /// `host`, or its host is, when `host` names no port.
    pub fn serves(&self, uri: &str) -> bool {
        let Some(target) = host_and_port(uri) else {
            return false;
        };
        let wanted = self.host.to_ascii_lowercase();
        target == wanted || (!has_port(&wanted) && host_only(&target) == wanted)
    }
}

pub(crate) const CALLEE_KEYS: [&str; 4] = ["host", "username", "password", "srtp"];

/// The `host[:port]` of a `sip:` or `sips:` URI, lower-case.
fn host_and_port(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let after_user = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let end = after_user.find([';', '?', '>']).unwrap_or(after_user.len());
    let host = &after_user[..end];
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        // An IPv6 reference without a port ends in ']'.
        Some((_, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

fn host_only(host_port: &str) -> &str {
    if has_port(host_port) {
        host_port
            .rsplit_once(':')
            .map_or(host_port, |(host, _)| host)
    } else {
        host_port
    }
}

/// Whether `host` is a host name, IPv4 or bracketed IPv6 address,
/// optionally with a port: what `callee.host` may be.
fn is_host(host: &str) -> bool {
    let name = host_only(host);
    let ipv6 = name.starts_with('[') && name.ends_with(']') && name.len() > 2;
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok = !has_port(host)
        || host
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0));
    (ipv6 || plain) && port_ok && host.len() <= 255
}

pub(crate) fn read_callees(
    tables: Vec<(String, Item)>,
    env: &dyn Environment,
    diagnostics: &Diagnostics,
) -> Vec<CalleeConfig> {
    let mut callees: Vec<CalleeConfig> = Vec::new();
    for (path, item) in tables {
        let mut t = TableReader::new(&path, Some(item), diagnostics);
        let host = match t.take("host") {
            None => {
                diagnostics.report(
                    &t.key("host"),
                    None,
                    None,
                    "every [[callee]] needs the host its credentials are for",
                );
                None
            }
            Some(item) => match item.get_ref() {
                crate::tree::Node::Str(host) if is_host(host) => {
                    let host = host.to_ascii_lowercase();
                    if callees.iter().any(|other| other.host == host) {
                        diagnostics.report_item(
                            &t.key("host"),
                            &item,
                            "another [[callee]] has the same host",
                        );
                    }
                    Some(host)
                }
                _ => {
                    diagnostics.report_item(
                        &t.key("host"),
                        &item,
                        "expected the host (and port) of callee URIs, like \"pbx.example.com\" or \"192.0.2.10:5070\"",
                    );
                    None
                }
            },
        };
        let has_username = t.span("username").is_some();
        let has_password = t.span("password").is_some();
        let has_srtp = t.span("srtp").is_some();
        let username = t.get::<String>("username").filter(|u| !u.is_empty());
        let password = secret(&mut t, "password", env);
        let srtp = t.get("srtp");
        let credentials = match (username, password) {
            (Some(username), Some(password)) => Some((username, password)),
            _ if has_username || has_password || !has_srtp => {
                diagnostics.report(
                    &t.key(if has_username { "password" } else { "username" }),
                    None,
                    None,
                    "a [[callee]] needs both username and password for digest authentication (or only srtp)",
                );
                None
            }
            _ => None,
        };
        t.finish(&CALLEE_KEYS);
        if let Some(host) = host {
            callees.push(CalleeConfig {
                host,
                credentials,
                srtp,
            });
        }
    }
    callees
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callee(host: &str) -> CalleeConfig {
        CalleeConfig {
            host: host.to_owned(),
            credentials: Some(("tollbridge".into(), Secret::inline("s"))),
            srtp: None,
        }
    }

    #[test]
    fn credentials_serve_the_uris_of_their_host() {
        let cases = [
            ("pbx.example.com", "sip:alice@pbx.example.com", true),
            (
                "pbx.example.com",
                "sip:alice@PBX.example.com:5070;transport=tcp",
                true,
            ),
            ("pbx.example.com", "sips:bob@pbx.example.com", true),
            ("pbx.example.com", "sip:alice@pbx.example.org", false),
            ("pbx.example.com", "sip:alice@evil.pbx.example.com", false),
            ("192.0.2.10:5070", "sip:expert@192.0.2.10:5070", true),
            ("192.0.2.10:5070", "sip:expert@192.0.2.10", false),
            ("192.0.2.10:5070", "sip:expert@192.0.2.10:5080", false),
            ("[2001:db8::1]", "sip:expert@[2001:db8::1]:5060", true),
            ("pbx.example.com", "sip:pbx.example.com", true),
            ("pbx.example.com", "tel:+81312345678", false),
            ("pbx.example.com", "sip:", false),
        ];
        for (host, uri, serves) in cases {
            assert_eq!(callee(host).serves(uri), serves, "{host} for {uri}");
        }
    }

    #[test]
    fn hosts_table() {
        for good in [
            "pbx.example.com",
            "192.0.2.10",
            "192.0.2.10:5070",
            "[2001:db8::1]:5061",
        ] {
            assert!(is_host(good), "{good}");
        }
        for bad in [
            "",
            "sip:pbx",
            "pbx.example.com:0",
            "pbx.example.com:99999",
            "a b",
            "pbx/x",
            "[]",
        ] {
            assert!(!is_host(bad), "{bad}");
        }
    }
}
