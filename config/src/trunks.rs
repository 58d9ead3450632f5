//! `[[trunk]]`: the SIP peers allowed to send us calls (by address or a
//! provider's published ranges), and the termination URI through which
//! calls to phone numbers go out.

use ipnet::IpNet;

use crate::schema::secret;
use crate::secret::{Environment, Secret};
use crate::tree::{Diagnostics, Item, TableReader};
use crate::values::{TWILIO_SIGNALLING_RANGES, TrunkProfile, is_e164};

/// One `[[trunk]]`: a SIP peer allowed to send us calls, and optionally the
/// termination URI through which we call phone numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkConfig {
    /// `trunk.name`: unique, referenced by bookings.
    pub name: String,
    /// `trunk.profile`: built-in source ranges added to `allow`.
    pub profile: TrunkProfile,
    /// `trunk.allow`: extra source CIDRs.
    pub allow: Vec<IpNet>,
    /// `trunk.termination`: how to place calls to phone numbers through it.
    pub termination: Option<Termination>,
    /// `trunk.media_allow`: when not empty, the only networks RTP of this
    /// trunk's legs may come from (Twilio: 168.86.128.0/18).
    pub media_allow: Vec<IpNet>,
    /// `trunk.srtp`: SRTP on calls from this trunk and through its
    /// termination; `None` follows `media.srtp`.
    pub srtp: Option<crate::values::Srtp>,
}

impl TrunkConfig {
    /// Every source range this trunk accepts requests from.
    pub fn allowed_sources(&self) -> Vec<IpNet> {
        let builtin: &[&str] = match self.profile {
            TrunkProfile::Twilio => &TWILIO_SIGNALLING_RANGES,
            TrunkProfile::None => &[],
        };
        builtin
            .iter()
            .filter_map(|range| range.parse().ok())
            .chain(self.allow.iter().copied())
            .collect()
    }
}

/// `trunk.termination`: outbound calls to phone numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    /// Request-URI template with `{number}` for the E.164 number.
    pub uri: String,
    /// Digest user name, when the trunk uses credential lists.
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<Secret>,
    /// The E.164 caller ID we present (must be a number on the account).
    pub caller_id: Option<String>,
    /// New calls per second through this trunk (Twilio's default is 1 per
    /// trunk per region); more wait briefly in a queue.
    pub calls_per_second: u32,
}

pub(crate) const TRUNK_KEYS: [&str; 6] = [
    "name",
    "profile",
    "allow",
    "termination",
    "media_allow",
    "srtp",
];
pub(crate) const TERMINATION_KEYS: [&str; 5] = [
    "uri",
    "username",
    "password",
    "caller_id",
    "calls_per_second",
];

/// The trunk used when the file defines none: SIP from this host only.
pub(crate) fn loopback_trunk() -> TrunkConfig {
    TrunkConfig {
        name: "loopback".to_owned(),
        profile: TrunkProfile::None,
        allow: ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect(),
        termination: None,
        media_allow: Vec::new(),
        srtp: None,
    }
}

pub(crate) fn read_trunks(
    tables: Vec<(String, Item)>,
    env: &dyn Environment,
    diagnostics: &Diagnostics,
) -> Vec<TrunkConfig> {
    let mut trunks: Vec<TrunkConfig> = Vec::new();
    for (path, item) in tables {
        let mut t = TableReader::new(&path, Some(item), diagnostics);
        let name_item = t.take("name");
        let name = match &name_item {
            None => {
                diagnostics.report(&t.key("name"), None, None, "every [[trunk]] needs a name");
                String::new()
            }
            Some(item) => match item.get_ref() {
                crate::tree::Node::Str(name) if is_trunk_name(name) => {
                    if trunks.iter().any(|other| &other.name == name) {
                        diagnostics.report_item(
                            &t.key("name"),
                            item,
                            "another [[trunk]] has the same name",
                        );
                    }
                    name.clone()
                }
                _ => {
                    diagnostics.report_item(
                        &t.key("name"),
                        item,
                        "expected 1 to 32 characters of a-z, 0-9, '-' and '_'",
                    );
                    String::new()
                }
            },
        };
        let profile = t.get("profile").unwrap_or(TrunkProfile::Twilio);
        let allow_span = t.span("allow");
        let allow = t.list::<IpNet>("allow").unwrap_or_default();
        if profile == TrunkProfile::None && allow.is_empty() {
            diagnostics.report(
                &t.key("allow"),
                None,
                allow_span,
                "with profile = \"none\" the trunk needs at least one allowed source CIDR",
            );
        }
        let media_allow = t.list::<IpNet>("media_allow").unwrap_or_default();
        let srtp = t.get("srtp");
        let termination = t.take("termination").map(|item| {
            read_termination(
                TableReader::new(&t.key("termination"), Some(item), diagnostics),
                env,
            )
        });
        t.finish(&TRUNK_KEYS);
        trunks.push(TrunkConfig {
            name,
            profile,
            allow,
            termination: termination.flatten(),
            media_allow,
            srtp,
        });
    }
    trunks
}

pub(crate) fn is_trunk_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn read_termination(mut t: TableReader, env: &dyn Environment) -> Option<Termination> {
    let uri_item = t.take("uri");
    let uri = match &uri_item {
        None => {
            t.diagnostics().report(
                &t.key("uri"),
                None,
                None,
                "required, e.g. \"sip:{number}@example.pstn.twilio.com\"",
            );
            None
        }
        Some(item) => match item.get_ref() {
            crate::tree::Node::Str(uri)
                if !(uri.starts_with("sip:") || uri.starts_with("sips:")) =>
            {
                t.diagnostics()
                    .report_item(&t.key("uri"), item, "must be a sip: URI");
                None
            }
            crate::tree::Node::Str(uri) if !uri.contains("{number}") => {
                t.diagnostics().report_item(
                    &t.key("uri"),
                    item,
                    "must contain {number}, where the E.164 number goes (\"sip:{number}@example.pstn.twilio.com\")",
                );
                None
            }
            crate::tree::Node::Str(uri) => Some(uri.clone()),
            _ => {
                t.diagnostics()
                    .report_item(&t.key("uri"), item, "expected a string");
                None
            }
        },
    };
    let username = t.get::<String>("username");
    let password = secret(&mut t, "password", env);
    if username.is_some() != password.is_some() {
        t.diagnostics().report(
            &t.key("password"),
            None,
            None,
            "username and password go together: give both for digest authentication, or neither",
        );
    }
    let caller_id = t.get_with("caller_id", |node| match node {
        crate::tree::Node::Str(s) if is_e164(s) => Ok(s.clone()),
        _ => Err("expected an E.164 number like \"+81312345678\"".to_owned()),
    });
    let calls_per_second = t
        .get_with("calls_per_second", |node| match node {
            crate::tree::Node::Int(n) if (1..=100).contains(n) => Ok(*n as u32),
            _ => Err("expected an integer from 1 to 100".to_owned()),
        })
        .unwrap_or(1);
    t.finish(&TERMINATION_KEYS);
    Some(Termination {
        uri: uri?,
        username,
        password,
        caller_id,
        calls_per_second,
    })
}
