//! SDP offer/answer for a G.711 bridge (RFC 3264), on `sdp-types`.
//!
//! The relay never transcodes: both legs must agree on one G.711 codec
//! (PCMU or PCMA, static payload types 0 and 8), and telephone-event
//! (RFC 4733) is carried when both sides offer it, with its dynamic payload
//! type rewritten between the legs. Only the first audio stream we can
//! take counts: plain `RTP/AVP`, or `RTP/SAVP` keyed by an `a=crypto`
//! line (SDES, RFC 4568) with a suite we speak; every other m-line of an
//! offer is refused in our answer with port 0, in its place, as RFC 3264
//! §6 asks. An offer we cannot honour (another profile, SRTP without a
//! usable key, a multicast or broadcast address, an address whose family
//! its `c=` line does not state) is an error, so the call gets 488
//! instead of an answer that would not work. Whether SRTP is used on a
//! leg is the leg's [`SrtpPolicy`]'s to say ([`negotiate_crypto`]).

use std::net::{IpAddr, SocketAddr};

use sdp_types::{Attribute, Connection, Media, Origin, Session};

use crate::srtp::{MasterKey, Suite};

/// Why an SDP body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is not SDP we can parse.
    #[error("unparseable SDP: {0}")]
    Unparseable(String),
    /// There is no audio stream, or it was refused (port 0).
    #[error("no audio stream")]
    NoAudio,
    /// The audio stream has no connection address.
    #[error("the audio stream has no connection address")]
    NoAddress,
    /// The audio stream offers neither PCMU nor PCMA.
    #[error("no common codec (PCMU or PCMA)")]
    NoCommonCodec,
    /// Audio is offered only over a profile the relay does not speak (or
    /// SRTP without a key in a suite we speak).
    #[error(
        "audio is offered only as {0} (RTP/AVP, or RTP/SAVP with an AES_CM_128_HMAC_SHA1_80 or _32 a=crypto line, is required)"
    )]
    Profile(String),
    /// The leg's policy refuses SRTP and the offer has nothing else.
    #[error("SRTP is offered but off for this leg (media.srtp = \"off\")")]
    SrtpOff,
    /// The leg's policy requires SRTP and the SDP has no usable key.
    #[error(
        "SRTP is required for this leg (media.srtp = \"required\") and the SDP has no usable a=crypto line"
    )]
    SrtpRequired,
    /// The connection address is not one we can send unicast RTP to.
    #[error("unusable connection address: {0}")]
    BadAddress(String),
}

/// Whether SRTP is used on a leg (`media.srtp`, per trunk and callee).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpPolicy {
    /// Plain RTP only: an offer of SRTP alone gets 488.
    Off,
    /// SRTP when the party offers it, plain RTP otherwise; our own offers
    /// are plain.
    Optional,
    /// SRTP only: a plain offer or answer ends the leg (488).
    Required,
}

/// One `a=crypto` line (RFC 4568): its tag, suite and master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The tag an answer repeats to say which offered line it took.
    pub tag: u32,
    /// The crypto suite.
    pub suite: Suite,
    /// The sender's master key and salt.
    pub key: MasterKey,
}

impl Crypto {
    /// Reads an `a=crypto` value we can use: a suite we speak, one
    /// `inline:` key, no MKI and no session parameters. Anything else is
    /// `None` (the line is skipped, as RFC 4568 §5.1.2 lets an answerer).
    pub fn parse(value: &str) -> Option<Crypto> {
        let mut parts = value.split_whitespace();
        let tag_text = parts.next()?;
        if tag_text.len() > 9 || !tag_text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let tag = tag_text.parse().ok()?;
        let suite = Suite::from_name(parts.next()?)?;
        let key_params = parts.next()?;
        if parts.next().is_some() || key_params.contains(';') {
            return None;
        }
        let mut fields = key_params.strip_prefix("inline:")?.split('|');
        let key = MasterKey::from_inline(fields.next()?)?;
        // A lifetime ("2^31" or a number) is fine; an MKI ("1:4") is not.
        if fields.any(|field| field.contains(':')) {
            return None;
        }
        Some(Crypto { tag, suite, key })
    }

    fn attribute_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            self.key.inline()
        )
    }
}

/// The crypto our answer takes from `offer` on a leg with `policy`:
/// `None` for plain RTP, else the offered line we take (the first we can
/// use, the offerer's preference). Disagreement is an error (488).
pub fn negotiate_crypto(
    offer: &AudioStream,
    policy: SrtpPolicy,
) -> Result<Option<Crypto>, SdpError> {
    match policy {
        SrtpPolicy::Off if offer.secure => Err(SdpError::SrtpOff),
        SrtpPolicy::Off => Ok(None),
        SrtpPolicy::Optional => Ok(offer.crypto.first().cloned()),
        SrtpPolicy::Required => offer
            .crypto
            .first()
            .cloned()
            .map(Some)
            .ok_or(SdpError::SrtpRequired),
    }
}

/// Our key in the suite of `theirs`, under its tag: the `a=crypto` line
/// of an answer to it.
pub fn answering_crypto(theirs: &Crypto, ours: &MasterKey) -> Crypto {
    Crypto {
        tag: theirs.tag,
        suite: theirs.suite,
        key: ours.clone(),
    }
}

/// Our offer's lines for `ours`: every suite we speak, the 80-bit one
/// first (Twilio's only one).
pub fn offered_crypto(ours: &MasterKey) -> Vec<Crypto> {
    Suite::ALL
        .into_iter()
        .zip(1..)
        .map(|(suite, tag)| Crypto {
            tag,
            suite,
            key: ours.clone(),
        })
        .collect()
}

/// What the party's answer to our offer `offered` keys: `(ours, theirs)`,
/// the line of ours it took and its own; `None` when we offered plain
/// RTP. An answer that takes none of our lines is an error.
pub fn answered_crypto(
    offered: &LocalStream,
    answer: &AudioStream,
) -> Result<Option<(Crypto, Crypto)>, SdpError> {
    if offered.crypto.is_empty() {
        return Ok(None);
    }
    answer
        .crypto
        .iter()
        .find_map(|theirs| {
            offered
                .crypto
                .iter()
                .find(|ours| ours.tag == theirs.tag && ours.suite == theirs.suite)
                .map(|ours| (ours.clone(), theirs.clone()))
        })
        .map(Some)
        .ok_or(SdpError::SrtpRequired)
}

/// One m-line of an offer, as an answer must repeat it when refusing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    /// `audio`, `video`, ...
    pub media: String,
    /// The transport profile (`RTP/AVP`, `RTP/SAVP`, ...).
    pub proto: String,
    /// The first offered format.
    pub format: String,
}

/// The unicast address a `c=` line names, refusing what we cannot send
/// RTP to (multicast, broadcast, a family the line does not state).
fn unicast_address(connection: &Connection) -> Result<IpAddr, SdpError> {
    let text = connection.connection_address.as_str();
    if !connection.nettype.eq_ignore_ascii_case("IN") {
        return Err(SdpError::BadAddress(format!(
            "network type {:?} is not IN",
            connection.nettype
        )));
    }
    if text.contains('/') {
        return Err(SdpError::BadAddress(format!(
            "{text} is a multicast group (TTL or count given)"
        )));
    }
    let ip: IpAddr = text.parse().map_err(|_| SdpError::NoAddress)?;
    let family_matches = match ip {
        IpAddr::V4(_) => connection.addrtype.eq_ignore_ascii_case("IP4"),
        IpAddr::V6(_) => connection.addrtype.eq_ignore_ascii_case("IP6"),
    };
    if !family_matches {
        return Err(SdpError::BadAddress(format!(
            "{ip} is not an {} address",
            connection.addrtype
        )));
    }
    if ip.is_multicast() {
        return Err(SdpError::BadAddress(format!("{ip} is a multicast group")));
    }
    if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return Err(SdpError::BadAddress(format!(
            "{ip} is the broadcast address"
        )));
    }
    Ok(ip)
}

/// The G.711 codecs the relay bridges, by their static payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, payload type 0.
    Pcmu,
    /// G.711 A-law, payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    fn from_format(format: &str, rtpmaps: &[(u8, String)]) -> Option<Codec> {
        let pt: u8 = format.parse().ok()?;
        let name = rtpmaps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, name)| name.to_ascii_uppercase());
        match (pt, name.as_deref()) {
            (0, None | Some("PCMU/8000" | "PCMU/8000/1")) => Some(Codec::Pcmu),
            (8, None | Some("PCMA/8000" | "PCMA/8000/1")) => Some(Codec::Pcma),
            _ => None,
        }
    }
}

/// Which way media flows, from the point of view of the party whose SDP
/// says it (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways (the default).
    SendRecv,
    /// The party only sends (it put the other on hold).
    SendOnly,
    /// The party only receives.
    RecvOnly,
    /// Neither way (hold, both sides).
    Inactive,
}

impl Direction {
    /// Whether the party sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the party wants to receive media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction an answer gives to an offer with this one.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// The audio stream of one party's SDP, as far as the relay cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStream {
    /// Where the party wants its RTP; `None` for a hold with `c=0.0.0.0`.
    pub rtp: Option<SocketAddr>,
    /// Where the party wants its RTCP (`a=rtcp`, else the RTP port + 1).
    pub rtcp: Option<SocketAddr>,
    /// The G.711 codecs offered, in the party's order of preference.
    pub codecs: Vec<Codec>,
    /// The telephone-event payload type the party receives DTMF on.
    pub telephone_event: Option<u8>,
    /// `a=ptime`, when given.
    pub ptime: Option<u32>,
    /// `a=sendrecv` and friends.
    pub direction: Direction,
    /// Every m-line of the body, in order, and which one this stream is:
    /// an answer repeats them all, refusing the others.
    pub medias: Vec<OfferedMedia>,
    /// This stream's place among [`AudioStream::medias`].
    pub index: usize,
    /// Whether its profile is `RTP/SAVP` (an answer repeats it).
    pub secure: bool,
    /// Its `a=crypto` lines we can use, in the party's order; an
    /// `RTP/AVP` stream may carry some too (best-effort SRTP).
    pub crypto: Vec<Crypto>,
}

impl AudioStream {
    /// Reads the first audio stream of an SDP body we can take: plain
    /// RTP, or SRTP with a usable `a=crypto` line.
    pub fn parse(body: &[u8]) -> Result<AudioStream, SdpError> {
        AudioStream::parse_with(body, true)
    }

    /// [`AudioStream::parse`], passing over `RTP/SAVP` streams unless
    /// `srtp` (a leg whose SRTP is off takes the plain stream of an offer
    /// that has both).
    pub fn parse_with(body: &[u8], srtp: bool) -> Result<AudioStream, SdpError> {
        let session = Session::parse(body).map_err(|e| SdpError::Unparseable(e.to_string()))?;
        let medias: Vec<OfferedMedia> = session
            .medias
            .iter()
            .map(|m| OfferedMedia {
                media: m.media.clone(),
                proto: m.proto.clone(),
                format: m.fmt.split_whitespace().next().unwrap_or("0").to_owned(),
            })
            .collect();
        let mut audio = session
            .medias
            .iter()
            .enumerate()
            .filter(|(_, m)| m.media == "audio" && m.port != 0)
            .peekable();
        let first_proto = audio
            .peek()
            .map(|(_, m)| m.proto.clone())
            .ok_or(SdpError::NoAudio)?;
        let usable_crypto = |m: &Media| -> Vec<Crypto> {
            m.attributes
                .iter()
                .filter(|a| a.attribute == "crypto")
                .filter_map(|a| Crypto::parse(a.value.as_deref()?))
                .collect()
        };
        let (index, media) = audio
            .find(|(_, m)| {
                m.proto.eq_ignore_ascii_case("RTP/AVP")
                    || (srtp
                        && m.proto.eq_ignore_ascii_case("RTP/SAVP")
                        && !usable_crypto(m).is_empty())
            })
            .ok_or(SdpError::Profile(first_proto))?;
        let secure = media.proto.eq_ignore_ascii_case("RTP/SAVP");
        let crypto = usable_crypto(media);
        let connection = media
            .connections
            .first()
            .or(session.connection.as_ref())
            .ok_or(SdpError::NoAddress)?;
        let ip = unicast_address(connection)?;
        let rtpmaps: Vec<(u8, String)> = media
            .attributes
            .iter()
            .filter(|a| a.attribute == "rtpmap")
            .filter_map(|a| {
                let (pt, name) = a.value.as_deref()?.split_once(' ')?;
                Some((pt.trim().parse().ok()?, name.trim().to_owned()))
            })
            .collect();
        let formats: Vec<&str> = media.fmt.split_whitespace().collect();
        let mut codecs = Vec::new();
        for format in &formats {
            if let Some(codec) = Codec::from_format(format, &rtpmaps)
                && !codecs.contains(&codec)
            {
                codecs.push(codec);
            }
        }
        let telephone_event = rtpmaps
            .iter()
            .find(|(pt, name)| {
                name.to_ascii_lowercase()
                    .starts_with("telephone-event/8000")
                    && formats.contains(&pt.to_string().as_str())
            })
            .map(|(pt, _)| *pt);
        let attribute = |name: &str| {
            media
                .attributes
                .iter()
                .chain(session.attributes.iter())
                .find(|a| a.attribute == name)
        };
        let direction = if ip.is_unspecified() || attribute("inactive").is_some() {
            Direction::Inactive
        } else if attribute("sendonly").is_some() {
            Direction::SendOnly
        } else if attribute("recvonly").is_some() {
            Direction::RecvOnly
        } else {
            Direction::SendRecv
        };
        let ptime = attribute("ptime")
            .and_then(|a| a.value.as_deref())
            .and_then(|v| v.trim().parse().ok());
        let rtcp_port = attribute("rtcp")
            .and_then(|a| a.value.as_deref())
            .and_then(|v| v.split_whitespace().next())
            .and_then(|p| p.parse::<u16>().ok())
            .or_else(|| media.port.checked_add(1));
        let signalled = (!ip.is_unspecified()).then_some(ip);
        Ok(AudioStream {
            rtp: signalled.map(|ip| SocketAddr::new(ip, media.port)),
            rtcp: signalled
                .zip(rtcp_port)
                .map(|(ip, p)| SocketAddr::new(ip, p)),
            codecs,
            telephone_event,
            ptime,
            direction,
            medias,
            index,
            secure,
            crypto,
        })
    }
}

impl AudioStream {
    /// Refuses a stream the relay at `relay` cannot send to: an address of
    /// the other IP family.
    pub fn reachable_from(&self, relay: SocketAddr) -> Result<(), SdpError> {
        match self.rtp {
            Some(rtp) if rtp.is_ipv4() != relay.is_ipv4() => Err(SdpError::BadAddress(format!(
                "{} is not reachable from the relay's address {}",
                rtp.ip(),
                relay.ip()
            ))),
            _ => Ok(()),
        }
    }
}

/// What we write in one SDP body of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStream {
    /// Our relay port's address (public IP and the even RTP port).
    pub address: SocketAddr,
    /// Codecs, most preferred first.
    pub codecs: Vec<Codec>,
    /// telephone-event payload type, when DTMF is carried.
    pub telephone_event: Option<u8>,
    /// `a=ptime` to state, when the party stated one.
    pub ptime: Option<u32>,
    /// Our direction.
    pub direction: Direction,
    /// For an answer: the offer's m-lines and our stream's place among
    /// them (the others are refused with port 0). `None` for an offer.
    pub mirror: Option<(usize, Vec<OfferedMedia>)>,
    /// `RTP/SAVP` rather than `RTP/AVP`.
    pub secure: bool,
    /// Our `a=crypto` lines: every suite for an offer, the one taken for
    /// an answer; none for plain RTP.
    pub crypto: Vec<Crypto>,
}

/// The payload type we offer telephone-event on when the caller gave none
/// to copy (101 is what most phones use).
pub const DEFAULT_TELEPHONE_EVENT: u8 = 101;

/// Our offer to the callee for a caller who offered `caller`: the G.711
/// codecs we share with the caller, in the caller's order, and DTMF when the
/// caller can receive it.
pub fn offer_for_callee(caller: &AudioStream, relay: SocketAddr) -> Result<LocalStream, SdpError> {
    if caller.codecs.is_empty() {
        return Err(SdpError::NoCommonCodec);
    }
    Ok(LocalStream {
        address: relay,
        codecs: caller.codecs.clone(),
        telephone_event: caller.telephone_event,
        ptime: caller.ptime,
        direction: Direction::SendRecv,
        mirror: None,
        secure: false,
        crypto: Vec::new(),
    })
}

/// The codec a party's answer picked from our offer.
pub fn chosen_codec(offered: &LocalStream, answer: &AudioStream) -> Result<Codec, SdpError> {
    answer
        .codecs
        .iter()
        .copied()
        .find(|codec| offered.codecs.contains(codec))
        .ok_or(SdpError::NoCommonCodec)
}

/// Our answer to an offer, using `codec` (already agreed with the other
/// leg) and carrying DTMF when both the offer and the other leg have it;
/// SRTP with `crypto` (ours, see [`answering_crypto`]) when given, in the
/// offer's profile.
pub fn answer_to(
    offer: &AudioStream,
    codec: Codec,
    dtmf_on_other_leg: bool,
    relay: SocketAddr,
    crypto: Option<Crypto>,
) -> Result<LocalStream, SdpError> {
    if !offer.codecs.contains(&codec) {
        return Err(SdpError::NoCommonCodec);
    }
    Ok(LocalStream {
        address: relay,
        codecs: vec![codec],
        telephone_event: offer.telephone_event.filter(|_| dtmf_on_other_leg),
        ptime: offer.ptime,
        direction: offer.direction.answer(),
        mirror: Some((offer.index, offer.medias.clone())),
        secure: offer.secure && crypto.is_some(),
        crypto: crypto.into_iter().collect(),
    })
}

/// Renders SDP bodies for one leg: the origin's session id stays, its
/// version goes up with each body (RFC 3264 §8).
#[derive(Debug, Clone)]
pub struct SdpWriter {
    session_id: u64,
    version: u64,
}

impl SdpWriter {
    /// A writer with this session id (any number unique enough per leg).
    pub fn new(session_id: u64) -> Self {
        SdpWriter {
            session_id,
            version: 0,
        }
    }

    /// The SDP body for `stream`.
    pub fn render(&mut self, stream: &LocalStream) -> Vec<u8> {
        self.version += 1;
        let (addrtype, ip) = match stream.address.ip() {
            IpAddr::V4(ip) => ("IP4", ip.to_string()),
            IpAddr::V6(ip) => ("IP6", ip.to_string()),
        };
        let connection = Connection {
            nettype: "IN".into(),
            addrtype: addrtype.into(),
            connection_address: ip.clone(),
        };
        let attribute = |name: &str, value: Option<String>| Attribute {
            attribute: name.into(),
            value,
        };
        let mut formats: Vec<String> = stream
            .codecs
            .iter()
            .map(|c| c.payload_type().to_string())
            .collect();
        let mut attributes: Vec<Attribute> = stream
            .codecs
            .iter()
            .map(|c| {
                attribute(
                    "rtpmap",
                    Some(format!("{} {}/8000", c.payload_type(), c.name())),
                )
            })
            .collect();
        if let Some(pt) = stream.telephone_event {
            formats.push(pt.to_string());
            attributes.push(attribute(
                "rtpmap",
                Some(format!("{pt} telephone-event/8000")),
            ));
            attributes.push(attribute("fmtp", Some(format!("{pt} 0-16"))));
        }
        if let Some(ptime) = stream.ptime {
            attributes.push(attribute("ptime", Some(ptime.to_string())));
        }
        attributes.push(attribute(stream.direction.attribute(), None));
        for crypto in &stream.crypto {
            attributes.push(attribute("crypto", Some(crypto.attribute_value())));
        }
        let session = Session {
            origin: Origin {
                username: Some("tollbridge".into()),
                sess_id: self.session_id.to_string(),
                sess_version: self.version,
                nettype: "IN".into(),
                addrtype: addrtype.into(),
                unicast_address: ip,
            },
            session_name: "tollbridge".into(),
            session_description: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: Some(connection),
            bandwidths: Vec::new(),
            times: Vec::new(),
            time_zones: Vec::new(),
            key: None,
            attributes: Vec::new(),
            medias: Vec::new(),
        };
        let audio = Media {
            media: "audio".into(),
            port: stream.address.port(),
            num_ports: None,
            proto: if stream.secure { "RTP/SAVP" } else { "RTP/AVP" }.into(),
            fmt: formats.join(" "),
            media_title: None,
            connections: Vec::new(),
            bandwidths: Vec::new(),
            key: None,
            attributes,
        };
        let medias = match &stream.mirror {
            None => vec![audio],
            Some((ours, offered)) => {
                let mut audio = Some(audio);
                offered
                    .iter()
                    .enumerate()
                    .map(|(i, m)| match audio.take_if(|_| i == *ours) {
                        Some(audio) => audio,
                        None => Media {
                            media: m.media.clone(),
                            port: 0,
                            num_ports: None,
                            proto: m.proto.clone(),
                            fmt: m.format.clone(),
                            media_title: None,
                            connections: Vec::new(),
                            bandwidths: Vec::new(),
                            key: None,
                            attributes: Vec::new(),
                        },
                    })
                    .collect()
            }
        };
        let session = Session { medias, ..session };
        let mut body = Vec::with_capacity(256);
        // Writing into a Vec cannot fail.
        let _ = session.write(&mut body);
        body
    }
}

#[cfg(test)]
mod tests;
