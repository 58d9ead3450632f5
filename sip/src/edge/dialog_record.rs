//! What it takes to end an established dialog after a restart: its
//! identity (Call-ID, both tags), our CSeq, the remote target and route
//! set, and the transport, in a plain form the ledger stores. Kamailio's
//! dialog module keeps the same facts in its database for the same
//! reason: a process that died with calls up must still hang them up.
//!
//! The record is taken from rsipstack's own dialog snapshot when a leg is
//! established, and turned back into one to send the BYE; nothing here
//! builds SIP by hand.

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogSnapshot, DialogSnapshotState};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::ToTypedHeader;
use rsipstack::transaction::key::TransactionRole;
use serde::{Deserialize, Serialize};

use super::outbound::uri_target;
use super::{EdgeError, Transport};

/// Which side of the dialog we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialogRole {
    /// We answered the INVITE (the caller's leg).
    Uas,
    /// We sent the INVITE (the callee's leg).
    Uac,
}

/// An established dialog, as stored with its call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogRecord {
    /// Which side we were.
    pub role: DialogRole,
    /// The SIP Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
    /// The last CSeq we used; our next request uses one more.
    pub local_cseq: u32,
    /// The From header of the dialog-creating INVITE, as written.
    pub from: String,
    /// Its To header, with the answering side's tag.
    pub to: String,
    /// Our Contact URI.
    pub local_contact: Option<String>,
    /// The peer's Contact URI: the Request-URI of our requests.
    pub remote_target: String,
    /// Route header values for our requests, in the order we send them.
    pub route_set: Vec<String>,
    /// The transport the dialog was established over.
    pub transport: Transport,
}

impl DialogRecord {
    /// The record of `dialog` as it stands (established over `transport`).
    pub(crate) fn of(dialog: &InviteDialog, transport: Transport) -> DialogRecord {
        let snapshot = dialog.snapshot();
        DialogRecord {
            role: match snapshot.role {
                TransactionRole::Server => DialogRole::Uas,
                TransactionRole::Client => DialogRole::Uac,
            },
            call_id: snapshot.id.call_id,
            local_tag: snapshot.id.local_tag,
            remote_tag: snapshot.id.remote_tag,
            local_cseq: snapshot.local_cseq,
            from: snapshot.from.to_string(),
            to: snapshot.to.to_string(),
            local_contact: snapshot.local_contact.map(|uri| uri.to_string()),
            remote_target: snapshot.remote_uri.to_string(),
            route_set: snapshot
                .route_set
                .iter()
                .map(|route| route.value().to_owned())
                .collect(),
            transport,
        }
    }

    /// rsipstack's snapshot of this dialog, confirmed, ready to restore.
    pub(crate) fn snapshot(&self) -> Result<DialogSnapshot, EdgeError> {
        let bad = |what: &str, e: rsipstack::sip::Error| {
            EdgeError::Dialog(format!("stored dialog {}: bad {what}: {e}", self.call_id))
        };
        let from = rsipstack::sip::From::new(self.from.clone())
            .typed()
            .map_err(|e| bad("From", e))?;
        let to = rsipstack::sip::To::new(self.to.clone())
            .typed()
            .map_err(|e| bad("To", e))?;
        let mut remote_uri = rsipstack::sip::Uri::try_from(self.remote_target.as_str())
            .map_err(|e| bad("remote target", e))?;
        // The parser is lenient (a bare word is a host); a target is a SIP URI.
        if remote_uri.scheme.is_none() {
            return Err(EdgeError::Dialog(format!(
                "stored dialog {}: bad remote target: {:?} is not a SIP URI",
                self.call_id, self.remote_target
            )));
        }
        let local_contact = self
            .local_contact
            .as_deref()
            .map(rsipstack::sip::Uri::try_from)
            .transpose()
            .map_err(|e| bad("Contact", e))?;
        // A stream leg whose target names no transport is reached over the
        // transport it was established on, as rsipstack does for a UAS.
        if self.transport != Transport::Udp
            && self.route_set.is_empty()
            && !remote_uri
                .params
                .iter()
                .any(|p| matches!(p, rsipstack::sip::Param::Transport(_)))
        {
            remote_uri
                .params
                .push(rsipstack::sip::Param::Transport(self.transport.on_stack()));
        }
        Ok(DialogSnapshot {
            state: DialogSnapshotState::Confirmed,
            role: match self.role {
                DialogRole::Uas => TransactionRole::Server,
                DialogRole::Uac => TransactionRole::Client,
            },
            id: DialogId {
                call_id: self.call_id.clone(),
                local_tag: self.local_tag.clone(),
                remote_tag: self.remote_tag.clone(),
            },
            from,
            to,
            local_cseq: self.local_cseq,
            remote_cseq: 0,
            local_contact,
            remote_uri,
            remote_contact: None,
            route_set: self
                .route_set
                .iter()
                .map(|value| rsipstack::sip::Route::new(value.clone()))
                .collect(),
            supports_100rel: false,
            session_id: None,
        })
    }
}

/// The next hop of a stored dialog's requests when it is reached over
/// TLS: whom the BYE after a restart must first connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsHop {
    /// Host as the URI gives it (a name or an address).
    pub host: String,
    /// Port (5061 when the URI gives none, as the stack dials it).
    pub port: u16,
    /// The name the peer's certificate must carry.
    pub name: String,
}

impl DialogRecord {
    /// Where this dialog's BYE goes, when that is over TLS: the first
    /// Route, else the remote target, as rsipstack sends it. The
    /// certificate must name that URI's host; when the host is an
    /// address and we placed the call, the name we dialled (the To of our
    /// INVITE) is expected instead: the route came from that peer's own
    /// signalling over a connection that proved that name. `None` when
    /// the hop is not TLS.
    pub(crate) fn tls_hop(&self, snapshot: &DialogSnapshot) -> Result<Option<TlsHop>, EdgeError> {
        let hop = match snapshot.route_set.first() {
            // Parsed as the stack parses it when it sends.
            Some(route) => {
                route
                    .typed()
                    .map_err(|e| {
                        EdgeError::Dialog(format!(
                            "stored dialog {}: bad Route {:?}: {e}",
                            self.call_id,
                            route.value()
                        ))
                    })?
                    .uri
            }
            None => snapshot.remote_uri.clone(),
        };
        // As rsipstack reads the hop (its `transport` parameter).
        let on = rsipstack::transport::SipAddr::try_from(&hop)
            .ok()
            .and_then(|hop| hop.r#type);
        if on != Some(rsipstack::sip::Transport::Tls) {
            return Ok(None);
        }
        let (host, port) = uri_target(&hop, Transport::Tls);
        let is_address = |host: &str| host.parse::<std::net::IpAddr>().is_ok();
        let dialled = (self.role == DialogRole::Uac)
            .then(|| uri_target(&snapshot.to.uri, Transport::Tls).0)
            .filter(|name| !is_address(name));
        let name = match dialled {
            Some(dialled) if is_address(&host) => dialled,
            _ => host.clone(),
        };
        Ok(Some(TlsHop { host, port, name }))
    }
}

/// How a BYE from a stored dialog ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByeOutcome {
    /// The peer answered with this final status (200, or 481 when it had
    /// already forgotten the dialog).
    Answered(u16),
    /// No final answer (timeout, transport failure); the text says which.
    Unanswered(String),
}

impl std::fmt::Display for ByeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ByeOutcome::Answered(code) => write!(f, "answered {code}"),
            ByeOutcome::Unanswered(why) => write!(f, "not answered: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record() -> DialogRecord {
        DialogRecord {
            role: DialogRole::Uas,
            call_id: "abc@twilio".into(),
            local_tag: "ours".into(),
            remote_tag: "theirs".into(),
            local_cseq: 1,
            from: "<sip:+819012345678@acme.pstn.twilio.com>;tag=theirs".into(),
            to: "<sip:+815012345678@tb.example>;tag=ours".into(),
            local_contact: Some("sip:tb.example:5060".into()),
            remote_target: "sip:+819012345678@172.25.10.20:5060;transport=udp".into(),
            route_set: vec![
                "<sip:54.172.60.1;lr;r2=on>".into(),
                "<sip:172.25.10.1;lr;r2=on>".into(),
            ],
            transport: Transport::Udp,
        }
    }

    #[test]
    fn a_record_survives_json_and_becomes_a_confirmed_snapshot() {
        let text = serde_json::to_string(&record()).unwrap();
        let back: DialogRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record());
        let snapshot = back.snapshot().unwrap();
        assert_eq!(snapshot.state, DialogSnapshotState::Confirmed);
        assert_eq!(snapshot.role, TransactionRole::Server);
        assert_eq!(snapshot.id.remote_tag, "theirs");
        assert_eq!(
            snapshot.remote_uri.to_string(),
            "sip:+819012345678@172.25.10.20:5060;transport=udp"
        );
        assert_eq!(snapshot.route_set.len(), 2);
        assert_eq!(snapshot.route_set[0].value(), "<sip:54.172.60.1;lr;r2=on>");
        assert_eq!(snapshot.local_cseq, 1);
    }

    #[test]
    fn a_stream_leg_without_a_route_names_its_transport() {
        let mut tcp = record();
        tcp.transport = Transport::Tcp;
        tcp.route_set.clear();
        tcp.remote_target = "sip:expert@192.0.2.10:5070".into();
        let snapshot = tcp.snapshot().unwrap();
        assert_eq!(
            snapshot.remote_uri.to_string(),
            "sip:expert@192.0.2.10:5070;transport=tcp"
        );
        let mut tls = tcp.clone();
        tls.transport = Transport::Tls;
        assert_eq!(
            tls.snapshot().unwrap().remote_uri.to_string(),
            "sip:expert@192.0.2.10:5070;transport=tls"
        );
    }

    /// The record's TLS hop, from its own snapshot.
    fn hop_of(record: &DialogRecord) -> Result<Option<TlsHop>, EdgeError> {
        record.tls_hop(&record.snapshot()?)
    }

    #[test]
    fn a_tls_hop_is_the_first_route_or_the_target_and_names_what_to_verify() {
        let hop = |host: &str, port: u16, name: &str| TlsHop {
            host: host.into(),
            port,
            name: name.into(),
        };
        // Twilio called us over TLS: its Record-Route, by address.
        let mut inbound = record();
        inbound.transport = Transport::Tls;
        inbound.route_set = vec![
            "<sip:54.172.60.1:5061;transport=tls;lr;r2=on>".into(),
            "<sip:172.25.10.1;lr;r2=on>".into(),
        ];
        assert_eq!(
            hop_of(&inbound).unwrap(),
            Some(hop("54.172.60.1", 5061, "54.172.60.1"))
        );
        // We called a trunk by name; its route is an address: the name we
        // dialled is what its certificate must carry.
        let mut placed = inbound.clone();
        placed.role = DialogRole::Uac;
        placed.to = "<sip:+81312345678@acme.pstn.twilio.com;transport=tls>;tag=theirs".into();
        assert_eq!(
            hop_of(&placed).unwrap(),
            Some(hop("54.172.60.1", 5061, "acme.pstn.twilio.com"))
        );
        // A route by name is verified against that name, default port 5061.
        placed.route_set = vec!["<sip:edge.example.net;transport=tls;lr>".into()];
        assert_eq!(
            hop_of(&placed).unwrap(),
            Some(hop("edge.example.net", 5061, "edge.example.net"))
        );
        // No route: the remote target, its transport from the record.
        placed.route_set.clear();
        placed.remote_target = "sip:expert@[2001:db8::7]:5071".into();
        assert_eq!(
            hop_of(&placed).unwrap(),
            Some(hop("2001:db8::7", 5071, "acme.pstn.twilio.com"))
        );
        // Not TLS: the stack sends it as it always does.
        assert_eq!(hop_of(&record()).unwrap(), None);
        let mut udp_route = inbound.clone();
        udp_route.route_set = vec!["<sip:54.172.60.1;lr>".into()];
        assert_eq!(hop_of(&udp_route).unwrap(), None);
        // A damaged route is refused, naming the call.
        let mut bad = inbound;
        bad.route_set = vec!["<sip:".into()];
        let error = hop_of(&bad).unwrap_err().to_string();
        assert!(
            error.contains("abc@twilio") && error.contains("Route"),
            "{error}"
        );
    }

    #[test]
    fn a_damaged_record_is_refused_naming_the_part() {
        let mut bad = record();
        bad.remote_target = "not a uri".into();
        let error = bad.snapshot().unwrap_err().to_string();
        assert!(error.contains("remote target"), "{error}");
        assert!(error.contains("abc@twilio"), "{error}");
    }
}
