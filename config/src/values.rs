//! The small value types of the config file and how each is written.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::tree::{FromScalar, Node, parse_str};

/// Parses a duration written as one or more `<integer><unit>` parts, units
/// `ms`, `s`, `m`, `h`: `"2s"`, `"500ms"`, `"1m30s"`. Hand-written because
/// this is the whole grammar and a crate for it would be larger than it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let usage = "write a duration like \"2s\", \"500ms\", \"5m\", \"1h30m\" or \"90d\"";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {usage}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}; {usage}"));
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("number too large; {usage}"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            "" => return Err(format!("missing unit after {number}; {usage}")),
            other => return Err(format!("unknown unit {other:?}; {usage}")),
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("duration too large; {usage}"))?;
        rest = after;
    }
    Ok(total)
}

/// A `Duration` read from a string setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationSetting(pub Duration);

impl FromScalar for DurationSetting {
    const EXPECTED: &'static str = "a duration string";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        match node {
            Node::Str(s) => parse_duration(s).map(DurationSetting),
            Node::Int(_) => {
                Err("a duration needs a unit: write it as a string like \"2s\"".to_owned())
            }
            _ => Err("expected a duration string like \"2s\"".to_owned()),
        }
    }
}

/// The transport of a SIP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS (1.2 or 1.3) on TCP: Twilio's Secure Trunking.
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// One SIP listener: `"udp:127.0.0.1:5060"`, `"tcp:[::1]:5060"`,
/// `"tls:0.0.0.0:5061"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// Which transport to listen on.
    pub transport: Transport,
    /// Local address and port; port 0 picks a free one (tests).
    pub addr: SocketAddr,
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage =
            "write it as \"udp:ADDRESS:PORT\", \"tcp:ADDRESS:PORT\" or \"tls:ADDRESS:PORT\"";
        let (transport, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("missing transport; {usage}"))?;
        let transport = match transport {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => return Err(format!("unknown transport {other:?}; {usage}")),
        };
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|_| format!("{addr:?} is not an IP address with a port; {usage}"))?;
        Ok(ListenAddr { transport, addr })
    }
}

impl FromScalar for ListenAddr {
    const EXPECTED: &'static str = "\"udp:ADDRESS:PORT\" or \"tcp:ADDRESS:PORT\"";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        parse_str(node)
    }
}

/// The host (and optional port) we put in our Contact and Via headers:
/// `"sip.example.com"`, `"203.0.113.7:5060"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddress {
    /// Host name or IP address, as it should appear in SIP headers.
    pub host: String,
    /// Port, when it differs from the listener's.
    pub port: Option<u16>,
}

impl FromStr for PublicAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(PublicAddress {
                host: addr.ip().to_string(),
                port: Some(addr.port()),
            });
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PublicAddress {
                host: ip.to_string(),
                port: None,
            });
        }
        let usage =
            "expected a host name or IP address, optionally with :PORT (no scheme, no path)";
        if s.contains(['/', '@', ';']) {
            return Err(usage.to_owned());
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{port:?} is not a port number"))?;
                (host, Some(port))
            }
            None => (s, None),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
            return Err(usage.to_owned());
        }
        Ok(PublicAddress {
            host: host.to_owned(),
            port,
        })
    }
}

impl FromScalar for PublicAddress {
    const EXPECTED: &'static str = "a host name or IP address";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        parse_str(node)
    }
}

/// An inclusive UDP port range for the media relay: `"20000-20999"`. Each
/// call leg takes an even RTP port and the RTCP port above it, so the range
/// starts on an even port and holds at least two pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port, even.
    pub first: u16,
    /// Last port, inclusive.
    pub last: u16,
}

impl PortRange {
    /// How many RTP/RTCP pairs fit in the range.
    pub fn pairs(&self) -> u32 {
        // Ports in the range, halved (a lone odd port at the end is unused).
        (u32::from(self.last) - u32::from(self.first)).div_ceil(2)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write it as \"FIRST-LAST\", e.g. \"20000-20999\"";
        let (first, last) = s
            .split_once('-')
            .ok_or_else(|| format!("missing '-'; {usage}"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{p:?} is not a port number (1-65535)"))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first > last {
            return Err(format!(
                "the first port {first} is above the last port {last}"
            ));
        }
        if first % 2 != 0 {
            return Err(format!(
                "the first port {first} must be even (RTP takes even ports, RTCP the odd one above)"
            ));
        }
        let range = PortRange { first, last };
        if range.pairs() < 2 {
            return Err(
                "the range must hold at least two RTP/RTCP pairs (4 ports), one per call leg"
                    .to_owned(),
            );
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromScalar for PortRange {
    const EXPECTED: &'static str = "a port range like \"20000-20999\"";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        parse_str(node)
    }
}

impl FromScalar for IpNet {
    const EXPECTED: &'static str = "a CIDR like \"192.0.2.0/24\"";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        match node {
            Node::Str(s) => s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("{s:?} is not a CIDR like \"192.0.2.0/24\" or an IP address")),
            _ => Err("expected a CIDR string like \"192.0.2.0/24\"".to_owned()),
        }
    }
}

impl FromScalar for SocketAddr {
    const EXPECTED: &'static str = "an address with a port like \"127.0.0.1:8080\"";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        match node {
            Node::Str(s) => s.parse().map_err(|_| {
                format!("{s:?} is not an IP address with a port, like \"127.0.0.1:8080\"")
            }),
            _ => Err("expected an address string like \"127.0.0.1:8080\"".to_owned()),
        }
    }
}

impl FromScalar for IpAddr {
    const EXPECTED: &'static str = "an IP address";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        match node {
            Node::Str(s) => s.parse().map_err(|_| format!("{s:?} is not an IP address")),
            _ => Err("expected an IP address string".to_owned()),
        }
    }
}

/// Declares a config enum written as one of a fixed set of strings.
macro_rules! keyword_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The word written in the config file.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromScalar for $name {
            const EXPECTED: &'static str = concat!("one of: ", $("\"", $text, "\" "),+);
            fn from_scalar(node: &Node) -> Result<Self, String> {
                let words = [$($text),+];
                match node {
                    $(Node::Str(s) if s == $text => Ok($name::$variant),)+
                    _ => Err(format!("expected one of {}", words.map(|w| format!("{w:?}")).join(", "))),
                }
            }
        }
    };
}

keyword_enum! {
    /// What to do with a SIP request from a source no trunk allows.
    UnknownSource {
        /// Send nothing back (the default: do not confirm we exist).
        Drop = "drop",
        /// Answer 403 Forbidden.
        Reject = "reject",
    }
}

keyword_enum! {
    /// Whether a call leg's media is SRTP (`media.srtp`, `trunk.srtp`,
    /// `callee.srtp`).
    Srtp {
        /// Plain RTP only; an offer of SRTP alone gets 488.
        Off = "off",
        /// SRTP when the party offers it, plain RTP otherwise; our offers
        /// are plain (the default).
        Optional = "optional",
        /// SRTP only: a plain offer gets 488, and our offers are SRTP.
        Required = "required",
    }
}

keyword_enum! {
    /// Which source a call leg's RTP may be latched to.
    Latch {
        /// The first source, then for a few seconds a closer one (same IP,
        /// then the exact SDP address and port, which always wins), then
        /// locked: works behind NATs and keeps strangers out (the default).
        Learn = "learn",
        /// Only the IP address signalled in that leg's SDP (any port).
        SignalledIp = "signalled-ip",
        /// The first source that sends, for the whole call.
        Any = "any",
    }
}

keyword_enum! {
    /// The built-in source ranges a trunk allows besides its own `allow`.
    TrunkProfile {
        /// Twilio Elastic SIP Trunking's signalling ranges.
        Twilio = "twilio",
        /// Only the trunk's own `allow` list.
        None = "none",
    }
}

keyword_enum! {
    /// How log lines are written.
    LogFormat {
        /// Human-readable with colours on a terminal, logfmt otherwise.
        Auto = "auto",
        /// Human-readable lines.
        Human = "human",
        /// `key=value` lines (journald and log shippers).
        Logfmt = "logfmt",
        /// One JSON object per line.
        Json = "json",
    }
}

/// Twilio Elastic SIP Trunking's signalling source ranges (all regions;
/// Twilio fails over between them), from `shared/TWILIO.md`.
pub const TWILIO_SIGNALLING_RANGES: [&str; 8] = [
    "54.172.60.0/30",
    "54.244.51.0/30",
    "54.171.127.192/30",
    "35.156.191.128/30",
    "54.65.63.192/30",
    "54.169.127.128/30",
    "54.252.254.64/30",
    "177.71.206.192/30",
];

/// Twilio's media source range (all regions), from `shared/TWILIO.md`:
/// what `trunk.media_allow` may be set to for a Twilio trunk.
pub const TWILIO_MEDIA_RANGE: &str = "168.86.128.0/18";

/// Checks a `tracing` filter directive list such as `"info"` or
/// `"info,tollbridge=debug"` without depending on the logging crate.
pub(crate) fn check_log_level(text: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if text.trim().is_empty() {
        return Err(
            "empty; write a level such as \"info\" or \"info,tollbridge=debug\"".to_owned(),
        );
    }
    for directive in text.split(',') {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level)
            .trim();
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{level:?} is not a level; use one of {} (optionally as target=level)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// True for `+` followed by 2 to 15 digits, the E.164 form Twilio wants.
pub(crate) fn is_e164(text: &str) -> bool {
    text.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("2s", Duration::from_secs(2)),
            ("500ms", Duration::from_millis(500)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s250ms", Duration::from_millis(90_250)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "2",
            "s",
            "2x",
            "2 s",
            "-1s",
            "1.5s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "udp:127.0.0.1:5060".parse::<ListenAddr>(),
            Ok(ListenAddr {
                transport: Transport::Udp,
                addr: "127.0.0.1:5060".parse().unwrap()
            })
        );
        assert_eq!(
            "tcp:[::1]:0".parse::<ListenAddr>().map(|l| l.transport),
            Ok(Transport::Tcp)
        );
        assert_eq!(
            "tls:1.2.3.4:5061"
                .parse::<ListenAddr>()
                .map(|l| l.transport),
            Ok(Transport::Tls)
        );
        for bad in [
            "127.0.0.1:5060",
            "sctp:127.0.0.1:5060",
            "udp:localhost:5060",
            "udp:127.0.0.1",
            "tls:example.com:5061",
            "TLS:1.2.3.4:5061",
        ] {
            assert!(
                bad.parse::<ListenAddr>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(
            "20000-20999".parse::<PortRange>().map(|r| r.pairs()),
            Ok(500)
        );
        assert_eq!("20000-20003".parse::<PortRange>().map(|r| r.pairs()), Ok(2));
        for bad in [
            "20999-20000",
            "20001-20999",
            "20000-20002",
            "0-100",
            "20000",
            "20000-70000",
            "a-b",
        ] {
            assert!(
                bad.parse::<PortRange>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn public_addresses() {
        assert_eq!(
            "sip.example.com".parse::<PublicAddress>(),
            Ok(PublicAddress {
                host: "sip.example.com".into(),
                port: None
            })
        );
        assert_eq!(
            "203.0.113.7:5080".parse::<PublicAddress>().map(|p| p.port),
            Ok(Some(5080))
        );
        assert_eq!(
            "2001:db8::1".parse::<PublicAddress>().map(|p| p.port),
            Ok(None)
        );
        for bad in [
            "",
            "sip:example.com",
            "http://x",
            "a..b",
            "host:0",
            "-bad.example",
        ] {
            assert!(
                bad.parse::<PublicAddress>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn log_levels() {
        assert!(check_log_level("info").is_ok());
        assert!(check_log_level("warn,tollbridge=debug,tollbridge::sip=TRACE").is_ok());
        assert!(check_log_level("loud").is_err());
        assert!(check_log_level("").is_err());
    }

    #[test]
    fn e164() {
        assert!(is_e164("+81312345678"));
        assert!(!is_e164("81312345678"));
        assert!(!is_e164("+81-3-1234"));
        assert!(!is_e164("+1234567890123456"));
    }

    #[test]
    fn twilio_ranges_parse() {
        for range in TWILIO_SIGNALLING_RANGES {
            assert!(range.parse::<IpNet>().is_ok(), "{range}");
        }
    }
}

/// A network interface's name as Linux allows it (`media.fast_path`):
/// 1 to 15 bytes, no `/`, `:` or white space, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceName(pub String);

impl FromScalar for InterfaceName {
    const EXPECTED: &'static str = "an interface name";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        let name = String::from_scalar(node)?;
        let allowed = (1..=15).contains(&name.len())
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if allowed {
            Ok(InterfaceName(name))
        } else {
            Err("expected an interface name (1 to 15 characters, no '/', ':' or spaces), e.g. \"eth0\"".to_owned())
        }
    }
}
